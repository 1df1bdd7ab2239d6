// 16 threads allocate and free at random (cudaMalloc and cudaMallocAsync,
// 1..24 MiB) under the cap. Prints how many allocations succeeded and how
// many were refused; the test checks the simulated driver's own ledger.
#include <thread>
#include <vector>
#include <atomic>
#include "common.cuh"

static std::atomic<long> ok_allocs{0}, oom{0}, other{0};

static void worker(int id, int iters) {
  cudaSetDevice(0);
  cudaStream_t s;
  if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) { other++; return; }
  unsigned x = 0x9e3779b9u * (id + 1);
  std::vector<std::pair<void *, bool>> held;
  for (int i = 0; i < iters; i++) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    if ((x % 3 == 0 && !held.empty()) || held.size() > 8) {
      auto [p, async] = held.back();
      held.pop_back();
      cudaError_t e = async ? cudaFreeAsync(p, s) : cudaFree(p);
      if (e != cudaSuccess) other++;
    } else {
      size_t mib = 1 + x % 24;
      bool async = (x >> 8) & 1;
      void *p = nullptr;
      cudaError_t e = async ? cudaMallocAsync(&p, mib << 20, s) : cudaMalloc(&p, mib << 20);
      if (e == cudaSuccess) { ok_allocs++; held.push_back({p, async}); }
      else if (e == cudaErrorMemoryAllocation) { oom++; cudaGetLastError(); }
      else other++;
    }
  }
  for (auto [p, async] : held) { if ((async ? cudaFreeAsync(p, s) : cudaFree(p)) != cudaSuccess) other++; }
  cudaStreamSynchronize(s);
  cudaStreamDestroy(s);
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 300;
  CK(cudaFree(0));
  std::vector<std::thread> ts;
  for (int i = 0; i < 16; i++) ts.emplace_back(worker, i, iters);
  for (auto &t : ts) t.join();
  size_t f, t;
  CK(cudaMemGetInfo(&f, &t));
  printf("ok_allocs=%ld oom=%ld other_errors=%ld end_free=%zu end_total=%zu\n", ok_allocs.load(), oom.load(), other.load(), f, t);
  EXPECT(other == 0);
  EXPECT(f == t);
  DONE();
}

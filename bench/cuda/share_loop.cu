// A saturating tenant that measures its own share of the GPU, without the
// simulator's ground truth (for `tslice-bench shares --real-gpu`).
//   share_loop calibrate KERNEL_US      prints iters= for a KERNEL_US kernel
//   share_loop KERNEL_US SECONDS ITERS  the tenant
// The kernel does a fixed amount of work (ITERS steps of a dependent integer
// chain), so a kernel preempted at the end of its context's timeslice still
// does all of it on the GPU; a kernel that spins on %globaltimer would count
// the other tenants' turn as its own. On the simulated GPU the kernel's name
// contains sim_spin and its first argument (KERNEL_US in ns) is its
// duration, so calibration converges at once there.
// The tenant launches kernels back to back on a non-blocking stream for
// SECONDS, recording an event (no timing) after every kernel. Completed
// kernels are counted by querying the oldest outstanding event (stream order:
// event i complete => kernels 0..i complete). Every ~1 ms it samples
// (CLOCK_MONOTONIC ns, kernels completed). The benchmark picks a window
// common to all tenants and computes share = completed kernels in the window
// x calibrated kernel duration / window length.
#include <cuda_runtime.h>
#include <time.h>
#include <unistd.h>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

__device__ unsigned long long g_sink;

// `ns` is read by the simulated driver only; a real GPU runs `iters` steps.
__global__ void sim_spin_work(unsigned long long ns, unsigned long long iters) {
  unsigned long long x = threadIdx.x + ns + 1;
  for (unsigned long long i = 0; i < iters; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  if (x == 42) g_sink = x;  // keeps the chain alive
}

static int g_fails = 0;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #x, cudaGetErrorName(e_)); g_fails++; } } while (0)

static unsigned long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static const long RING = 8192;
static const unsigned long long SAMPLE_NS = 1000000;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Finds the iteration count that makes the kernel take KERNEL_US on an idle
// GPU (event timing, median of 9 launches per try).
static int calibrate(unsigned long long kns) {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  auto measure = [&](unsigned long long iters) {
    std::vector<double> v;
    for (int i = 0; i < 9; i++) {
      CK(cudaEventRecord(a, s));
      sim_spin_work<<<1, 1, 0, s>>>(kns, iters);
      CK(cudaEventRecord(b, s));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      v.push_back(ms * 1e6);
    }
    return median(v);
  };
  unsigned long long iters = 1 << 14;
  double t = measure(iters);
  for (int round = 0; round < 12 && !g_fails && t > 0 && fabs(t - (double)kns) > 0.002 * kns; round++) {
    iters = std::max(1ull, (unsigned long long)(iters * ((double)kns / t)));
    t = measure(iters);
  }
  printf("iters=%llu kernel_ns=%.0f\n", iters, t);
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  CK(cudaStreamDestroy(s));
  printf("%sFAILS=%d\n", g_fails ? "" : "OK ", g_fails);
  return g_fails != 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "calibrate")) return calibrate(strtoull(argv[2], 0, 10) * 1000ull);
  if (argc < 4) { printf("usage: share_loop calibrate KERNEL_US | share_loop KERNEL_US SECONDS ITERS\n"); return 2; }
  unsigned long long kns = strtoull(argv[1], 0, 10) * 1000ull;
  double secs = atof(argv[2]);
  unsigned long long iters = strtoull(argv[3], 0, 10);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<cudaEvent_t> ev(RING);
  for (auto &e : ev) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  sim_spin_work<<<1, 1, 0, s>>>(0, 1);
  CK(cudaStreamSynchronize(s));
  if (g_fails) { printf("FAILS=%d\n", g_fails); return 1; }

  std::vector<unsigned long long> st, sc;
  st.reserve((size_t)(secs * 1e9 / SAMPLE_NS) + 16);
  sc.reserve(st.capacity());
  long launched = 0, completed = 0;
  unsigned long long t0 = now_ns(), end = t0 + (unsigned long long)(secs * 1e9), next_sample = t0;
  printf("pid=%d t_start=%llu\n", getpid(), t0);
  fflush(stdout);
  for (;;) {
    // Count completions (cheap: usually one query).
    while (completed < launched) {
      cudaError_t q = cudaEventQuery(ev[completed % RING]);
      if (q == cudaErrorNotReady) break;
      CK(q);
      completed++;
    }
    unsigned long long t = now_ns();
    if (t >= next_sample) {
      st.push_back(t);
      sc.push_back(completed);
      next_sample = t + SAMPLE_NS;
    }
    if (t >= end || g_fails) break;
    if (launched - completed >= RING) {  // never reuse an outstanding event
      CK(cudaEventSynchronize(ev[completed % RING]));
      continue;
    }
    sim_spin_work<<<1, 1, 0, s>>>(kns, iters);
    CK(cudaEventRecord(ev[launched % RING], s));
    launched++;
  }
  unsigned long long t1 = now_ns();
  CK(cudaStreamSynchronize(s));
  printf("t_end=%llu launches=%ld completed_at_end=%ld iters=%llu\n", t1, launched, completed, iters);
  printf("samples=");
  for (size_t i = 0; i < st.size(); i++) printf("%s%llu:%llu", i ? "," : "", st[i], sc[i]);
  printf("\n");
  for (auto &e : ev) CK(cudaEventDestroy(e));
  CK(cudaStreamDestroy(s));
  printf("%sFAILS=%d\n", g_fails ? "" : "OK ", g_fails);
  return g_fails != 0;
}

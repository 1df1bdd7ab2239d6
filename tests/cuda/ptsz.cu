// Built with --default-stream per-thread: every stream-ordered call goes
// through the _ptsz/_ptds entry points; two threads each time their own
// default stream.
#include "common.cuh"
#include <thread>
static void worker(int id, float* out) {
  CK(cudaSetDevice(0));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  int* d = nullptr; CK(cudaMalloc(&d, 4096));
  int v = id * 1000 + 7, r = 0;
  CK(cudaMemcpyAsync(d, &v, 4, cudaMemcpyHostToDevice, 0));
  CK(cudaEventRecord(a, 0));
  for (int k = 0; k < 3; k++) sim_spin<<<1, 1>>>(2000000ull);
  CK(cudaEventRecord(b, 0));
  CK(cudaStreamSynchronize(cudaStreamPerThread));
  CK(cudaEventElapsedTime(&out[id], a, b));
  CK(cudaMemcpy(&r, d, 4, cudaMemcpyDeviceToHost));
  EXPECT(r == v);
  CK(cudaFree(d));
}
int main() {
  float ms[2] = {0, 0};
  std::thread t0(worker, 0, ms), t1(worker, 1, ms);
  t0.join(); t1.join();
  printf("t0_ms=%.3f t1_ms=%.3f\n", ms[0], ms[1]);
  DONE();
}

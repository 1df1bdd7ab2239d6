// The reference "streams" checks, with timing: 5 sim_spin kernels of 2 ms
// between two events must take about 10 ms of device time.
#include <time.h>
#include "common.cuh"
static unsigned long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static volatile int g_host_ran = 0;
static void CUDART_CB host_fn(void* p) { g_host_ran = *(int*)p; }
int main() {
  const size_t bytes = 4 << 20;
  cudaStream_t s1, s2; CK(cudaStreamCreate(&s1)); CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  cudaEvent_t a, b, nt; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b)); CK(cudaEventCreateWithFlags(&nt, cudaEventDisableTiming));
  size_t u0 = used_bytes();
  char *d = nullptr, *d2 = nullptr;
  CK(cudaMallocAsync(&d, bytes, s1));
  CK(cudaMalloc(&d2, bytes));
  printf("alloc_delta=%zu\n", used_bytes() - u0);
  char* h = (char*)malloc(bytes); for (size_t i = 0; i < bytes; i++) h[i] = (char)(i * 7);
  CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  // Everything below queues behind a 250 ms blocker, so it is certainly not
  // complete when queried (unless this thread was descheduled for that long,
  // which the clock tells: then the queries prove nothing and are skipped).
  const unsigned long long blocker_ns = 250000000ull;
  unsigned long long t_queue = now_ns();
  sim_spin<<<1, 1, 0, s1>>>(blocker_ns);
  CK(cudaEventRecord(a, s1));
  for (int k = 0; k < 5; k++) sim_spin<<<1, 1, 0, s1>>>(2000000ull);
  CK(cudaGetLastError());
  CK(cudaEventRecord(b, s1));
  CK(cudaEventRecord(nt, s1));
  cudaError_t sq = cudaStreamQuery(s1), eq = cudaEventQuery(b);
  float ms = -1;
  cudaError_t et = cudaEventElapsedTime(&ms, a, b);
  if (now_ns() - t_queue < blocker_ns) {
    EXPECT(sq == cudaErrorNotReady);
    EXPECT(eq == cudaErrorNotReady);
    EXPECT(et == cudaErrorNotReady);
  }
  (void)cudaGetLastError();
  int v = 42; CK(cudaLaunchHostFunc(s1, host_fn, &v));
  CK(cudaEventSynchronize(b));
  CK(cudaEventElapsedTime(&ms, a, b));
  printf("elapsed_ms=%.3f\n", ms);
  EXPECT_ERR(cudaEventElapsedTime(&ms, a, nt), cudaErrorInvalidResourceHandle);
  CK(cudaStreamSynchronize(s1));
  EXPECT(g_host_ran == 42);
  CK(cudaStreamQuery(s1));
  CK(cudaMemcpyAsync(d2, d, bytes, cudaMemcpyDeviceToDevice, s2));
  CK(cudaStreamSynchronize(s2));
  char* h2 = (char*)malloc(bytes);
  CK(cudaMemcpy(h2, d2, bytes, cudaMemcpyDeviceToHost));
  int bad = 0; for (size_t i = 0; i < bytes; i++) bad += h2[i] != h[i];
  EXPECT(bad == 0);
  CK(cudaMemsetAsync(d2, 0xab, bytes, s2));
  CK(cudaMemcpyAsync(h2, d2, bytes, cudaMemcpyDeviceToHost, s2));
  CK(cudaStreamSynchronize(s2));
  EXPECT((unsigned char)h2[123] == 0xab);
  int prio_lo = 0, prio_hi = 0; CK(cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
  EXPECT(prio_lo == 0 && prio_hi < 0);
  CK(cudaFreeAsync(d, s1));
  CK(cudaStreamSynchronize(s1));
  CK(cudaFree(d2));
  printf("end_delta=%zu\n", used_bytes() - u0);
  CK(cudaEventDestroy(a)); CK(cudaEventDestroy(b)); CK(cudaEventDestroy(nt));
  CK(cudaStreamDestroy(s1)); CK(cudaStreamDestroy(s2));
  CK(cudaDeviceSynchronize());
  DONE();
}

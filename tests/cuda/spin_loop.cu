// A saturating tenant: launches sim_spin kernels back to back for a while.
//   spin_loop MODE KERNEL_US SECONDS
// MODE: kernels  one kernel of KERNEL_US per launch
//       graph    a captured graph of 10 kernels of KERNEL_US per launch
//       mix      250 kernels of 10 us (1 block) then one of 5 ms (132 blocks), repeated
//       failing  7 kernels of KERNEL_US, then a launch the driver refuses (too
//                much shared memory), as autotuners do, repeated
// Prints t_start/t_end (CLOCK_MONOTONIC ns, the simulated GPU's clock) and
// how many launches it made.
#include <time.h>
#include <unistd.h>
#include <string.h>
#include "common.cuh"
#include "tslice.cuh"

static unsigned long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 4) { printf("usage: spin_loop kernels|graph|mix|failing KERNEL_US SECONDS\n"); return 2; }
  const char *mode = argv[1];
  unsigned long long kns = strtoull(argv[2], 0, 10) * 1000ull;
  double secs = atof(argv[3]);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraphExec_t exec = nullptr;
  if (!strcmp(mode, "graph")) {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 10; i++) sim_spin<<<1, 1, 0, s>>>(kns);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&exec, g, 0));
    CK(cudaGraphDestroy(g));
  }
  CK(cudaStreamSynchronize(s));
  unsigned long long t0 = now_ns(), end = t0 + (unsigned long long)(secs * 1e9);
  printf("pid=%d t_start=%llu\n", getpid(), t0);
  fflush(stdout);
  long launches = 0;
  while (now_ns() < end) {
    if (exec) {
      CK(cudaGraphLaunch(exec, s));
    } else if (!strcmp(mode, "failing")) {
      for (int i = 0; i < 7; i++) sim_spin<<<1, 1, 0, s>>>(kns);
      sim_spin<<<1, 1, 1 << 20, s>>>(kns);
      if (cudaGetLastError() == cudaSuccess) { printf("FAIL the oversized launch succeeded\n"); g_fails++; }
      launches += 7;
    } else if (!strcmp(mode, "mix")) {
      for (int i = 0; i < 250; i++) sim_spin<<<1, 32, 0, s>>>(10000);
      sim_spin<<<132, 128, 0, s>>>(5000000);
      launches += 250;
    } else {
      sim_spin<<<1, 1, 0, s>>>(kns);
    }
    launches++;
    if (g_fails) break;
  }
  unsigned long long t1 = now_ns();
  CK(cudaStreamSynchronize(s));
  printf("t_end=%llu launches=%ld\n", t1, launches);
  tslice_device_stats st;
  if (tslice_stats(0, &st))
    printf("gate_launches=%llu throttled=%llu wait_ms=%.1f charged_ms=%.1f\n", (unsigned long long)st.launches,
           (unsigned long long)st.throttled_launches, st.throttle_wait_ns / 1e6, st.charged_ns / 1e6);
  if (exec) CK(cudaGraphExecDestroy(exec));
  CK(cudaStreamDestroy(s));
  DONE();
}

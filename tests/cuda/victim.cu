// A latency-sensitive tenant: one short kernel, then wait for it, in a loop.
//   victim KERNEL_US SECONDS
// Prints the latency of each launch+synchronize (p50, p99, max) measured
// after a short warm-up, and when each launch was made (launch_offsets_ns,
// from t_start, on CLOCK_MONOTONIC: the simulated GPU's clock), so that a
// test can measure the same latencies on the device's record.
#include <time.h>
#include <unistd.h>
#include <vector>
#include <algorithm>
#include "common.cuh"

static unsigned long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 3) { printf("usage: victim KERNEL_US SECONDS\n"); return 2; }
  unsigned long long kns = strtoull(argv[1], 0, 10) * 1000ull;
  double secs = atof(argv[2]);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int i = 0; i < 20; i++) { sim_spin<<<1, 1, 0, s>>>(kns); CK(cudaStreamSynchronize(s)); }
  std::vector<double> lat;
  std::vector<unsigned long long> launched;
  unsigned long long t0 = now_ns(), end = t0 + (unsigned long long)(secs * 1e9);
  printf("pid=%d t_start=%llu\n", getpid(), t0);
  while (now_ns() < end && !g_fails) {
    unsigned long long a = now_ns();
    sim_spin<<<1, 1, 0, s>>>(kns);
    CK(cudaStreamSynchronize(s));
    launched.push_back(a);
    lat.push_back((now_ns() - a) / 1000.0);
  }
  std::sort(lat.begin(), lat.end());
  auto q = [&](double p) { return lat[std::min(lat.size() - 1, (size_t)(p * lat.size()))]; };
  printf("samples=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f\n", lat.size(), q(0.50), q(0.99), lat.back());
  printf("launch_offsets_ns=");
  for (size_t i = 0; i < launched.size(); i++) printf("%s%llu", i ? "," : "", launched[i] - t0);
  printf("\n");
  CK(cudaStreamDestroy(s));
  DONE();
}

/* Latency of each cuMemAlloc_v2 (2 MiB; freed at once), for the broker
 * benchmark: prints p50_ns, p99_ns and max_ns over N allocations after a
 * warm-up. Driver API, linked against libcuda.
 *   alloc_lat N */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  CUcontext c;
  CUdeviceptr p;
  if (cuInit(0) || cuDevicePrimaryCtxRetain(&c, 0) || cuCtxSetCurrent(c)) return 1;
  for (int i = 0; i < 1000; i++) {
    if (cuMemAlloc(&p, 2 << 20) || cuMemFree(p)) return 1;
  }
  unsigned long long *t = malloc(sizeof *t * n);
  for (int i = 0; i < n; i++) {
    unsigned long long a = now_ns();
    if (cuMemAlloc(&p, 2 << 20)) return 1;
    t[i] = now_ns() - a;
    if (cuMemFree(p)) return 1;
  }
  qsort(t, n, sizeof *t, cmp);
  printf("p50_ns=%llu p99_ns=%llu max_ns=%llu\nOK FAILS=0\n", t[n / 2], t[n * 99 / 100], t[n - 1]);
  return 0;
}

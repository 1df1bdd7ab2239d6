// The shim's added cost on the hot paths, timed inside the process.
//   overhead N_LAUNCH N_ALLOC REPS
// Gets the driver's cuLaunchKernel, cuMemAlloc_v2 and cuMemFree_v2 through
// cudaGetDriverEntryPointByVersion, as frameworks do (under the shim these
// are the shim's wrappers), and a CUfunction for sim_spin through
// cudaGetFuncBySymbol. Then, REPS times:
//   - N_LAUNCH launches of sim_spin(0) on a non-blocking stream, synchronizing
//     every BATCH launches (the synchronization is not timed), so the queue
//     never fills: a 0 ns sim_spin completes at once on the simulated GPU and
//     in a few microseconds on a real one;
//   - N_ALLOC cuMemAlloc_v2(2 MiB) + cuMemFree_v2 pairs.
// Prints the median over REPS of ns per launch and ns per alloc/free pair,
// every repetition, and the shim's counters when it is loaded (to show that
// the gate was active and did not throttle).
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <time.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "../../include/tslice.h"

// Duration in ns is the first argument: the simulated driver reads it; a real
// GPU spins on %globaltimer for that long (0: returns at once).
__global__ void sim_spin(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}

static int g_fails = 0;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #x, cudaGetErrorName(e_)); g_fails++; } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, (int)r_); g_fails++; } } while (0)

typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void **, void **);
typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);

static const int BATCH = 2048;

static unsigned long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

template <class F> static F entry(const char *name, unsigned version) {
  void *p = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion(name, &p, version, cudaEnableDefault, &q));
  if (!p || q != cudaDriverEntryPointSuccess) {
    printf("FAIL entry point %s@%u not found\n", name, version);
    g_fails++;
  }
  return (F)p;
}

// The shim's counters for device 0; false when the shim is not loaded.
static bool shim_stats(tslice_device_stats *st) {
  typedef int (*stats_t)(int, tslice_device_stats *);
  stats_t get = (stats_t)dlsym(RTLD_DEFAULT, "tslice_get_device_stats");
  st->size = sizeof *st;
  return get && get(0, st) == 0;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  if (argc < 4) { printf("usage: overhead N_LAUNCH N_ALLOC REPS\n"); return 2; }
  const long n_launch = atol(argv[1]), n_alloc = atol(argv[2]), reps = atol(argv[3]);
  if (n_launch < 1 || n_alloc < 1 || reps < 1) { printf("usage: overhead N_LAUNCH N_ALLOC REPS (all >= 1)\n"); return 2; }
  CK(cudaFree(0));
  launch_t launch = entry<launch_t>("cuLaunchKernel", 4000);
  alloc_t alloc = entry<alloc_t>("cuMemAlloc", 3020);   // cuMemAlloc_v2
  free_t dfree = entry<free_t>("cuMemFree", 3020);      // cuMemFree_v2
  cudaFunction_t rf = nullptr;
  CK(cudaGetFuncBySymbol(&rf, (const void *)sim_spin));
  CUfunction f = (CUfunction)rf;
  cudaStream_t rs;
  CK(cudaStreamCreateWithFlags(&rs, cudaStreamNonBlocking));
  CUstream s = (CUstream)rs;
  if (g_fails) { printf("FAILS=%d\n", g_fails); return 1; }

  unsigned long long ns = 0;
  void *args[] = {&ns};
  const size_t bytes = 2u << 20;
  // Warm-up: first launches and allocations set things up in the runtime,
  // the driver and the shim (gate, lookup tables).
  for (int i = 0; i < 2000; i++) CU(launch(f, 1, 1, 1, 1, 1, 1, 0, s, args, nullptr));
  CK(cudaStreamSynchronize(rs));
  for (int i = 0; i < 200; i++) {
    CUdeviceptr p = 0;
    CU(alloc(&p, bytes));
    CU(dfree(p));
  }

  tslice_device_stats st0 = {};
  shim_stats(&st0);
  std::vector<double> lr, ar;
  for (long r = 0; r < reps && !g_fails; r++) {
    unsigned long long spent = 0;
    for (long done = 0; done < n_launch;) {
      long k = std::min<long>(BATCH, n_launch - done);
      unsigned long long t0 = now_ns();
      for (long i = 0; i < k; i++) {
        if (launch(f, 1, 1, 1, 1, 1, 1, 0, s, args, nullptr) != CUDA_SUCCESS) {
          printf("FAIL launch %ld\n", done + i);
          g_fails++;
          break;
        }
      }
      spent += now_ns() - t0;
      done += k;
      CK(cudaStreamSynchronize(rs));
      if (g_fails) break;
    }
    lr.push_back((double)spent / n_launch);

    unsigned long long t0 = now_ns();
    for (long i = 0; i < n_alloc; i++) {
      CUdeviceptr p = 0;
      if (alloc(&p, bytes) != CUDA_SUCCESS || dfree(p) != CUDA_SUCCESS) {
        printf("FAIL alloc/free %ld\n", i);
        g_fails++;
        break;
      }
    }
    ar.push_back((double)(now_ns() - t0) / n_alloc);
  }
  if (g_fails) { printf("FAILS=%d\n", g_fails); return 1; }

  printf("launch_ns=%.2f alloc_free_ns=%.2f\n", median(lr), median(ar));
  printf("launch_reps=");
  for (size_t i = 0; i < lr.size(); i++) printf("%s%.2f", i ? "," : "", lr[i]);
  printf(" alloc_reps=");
  for (size_t i = 0; i < ar.size(); i++) printf("%s%.2f", i ? "," : "", ar[i]);
  printf("\n");

  tslice_device_stats st1 = {};
  if (shim_stats(&st1)) {
    // Counters over the timed part only (the warm-up includes the first
    // launches of a new kernel, which the gate holds until measured).
    printf("shim=1 hbm_limited=%u compute_share_ppm=%u gate_launches=%llu throttled=%llu wait_ns=%llu\n",
           st1.hbm_limited, st1.compute_share_ppm, (unsigned long long)(st1.launches - st0.launches),
           (unsigned long long)(st1.throttled_launches - st0.throttled_launches),
           (unsigned long long)(st1.throttle_wait_ns - st0.throttle_wait_ns));
  } else {
    printf("shim=0\n");
  }
  CK(cudaStreamDestroy(rs));
  printf("%sFAILS=%d\n", g_fails ? "" : "OK ", g_fails);
  return g_fails != 0;
}

// Shared by the CUDA test programs: checks that count failures, and the
// sim_spin kernel whose duration is its first argument in nanoseconds (the
// simulated driver reads the argument; a real GPU spins on %globaltimer).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

static int g_fails = 0;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #x, cudaGetErrorName(e_)); g_fails++; } } while (0)
#define EXPECT_ERR(x, want) do { cudaError_t e_ = (x); if (e_ != (want)) { printf("FAIL %s:%d %s -> %s, expected %s\n", __FILE__, __LINE__, #x, cudaGetErrorName(e_), cudaGetErrorName(want)); g_fails++; } (void)cudaGetLastError(); } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); g_fails++; } } while (0)
#define DONE() do { printf("%sFAILS=%d\n", g_fails ? "" : "OK ", g_fails); return g_fails != 0; } while (0)

__global__ void sim_spin(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}

static size_t used_bytes() {
  size_t f = 0, t = 0;
  CK(cudaMemGetInfo(&f, &t));
  return t - f;
}

// Parameters of a graph memory-allocation node: `bytes` of device memory on device 0.
static cudaMemAllocNodeParams alloc_node_params(size_t bytes) {
  cudaMemAllocNodeParams p = {};
  p.poolProps.allocType = cudaMemAllocationTypePinned;
  p.poolProps.location.type = cudaMemLocationTypeDevice;
  p.poolProps.location.id = 0;
  p.bytesize = bytes;
  return p;
}

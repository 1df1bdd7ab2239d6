/* Destroying a context frees its memory, and the cap follows: allocations
 * made in a context that was destroyed (cuCtxDestroy, or the last release of
 * the primary context) are no longer charged. argv[1]: cap in MiB. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>

static int fails;
#define EXPECT(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); fails++; } } while (0)

int main(int argc, char **argv) {
  size_t cap = (size_t)strtoull(argc > 1 ? argv[1] : "64", 0, 10) << 20;
  size_t big = cap - (4 << 20);
  CUdevice d;
  EXPECT(cuInit(0) == CUDA_SUCCESS);
  EXPECT(cuDeviceGet(&d, 0) == CUDA_SUCCESS);
  for (int i = 0; i < 3; i++) {
    CUcontext c;
    CUdeviceptr p;
    EXPECT(cuCtxCreate(&c, NULL, 0, d) == CUDA_SUCCESS);
    EXPECT(cuMemAlloc(&p, big) == CUDA_SUCCESS);  /* not freed: the destroy frees it */
    EXPECT(cuCtxDestroy(c) == CUDA_SUCCESS);
  }
  for (int i = 0; i < 3; i++) {
    CUcontext c;
    CUdeviceptr p;
    EXPECT(cuDevicePrimaryCtxRetain(&c, d) == CUDA_SUCCESS);
    EXPECT(cuCtxSetCurrent(c) == CUDA_SUCCESS);
    EXPECT(cuMemAlloc(&p, big) == CUDA_SUCCESS);
    EXPECT(cuDevicePrimaryCtxRelease(d) == CUDA_SUCCESS);  /* the last reference */
  }
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

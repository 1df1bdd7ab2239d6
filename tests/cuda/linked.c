/* A driver-API program linked directly against libcuda (-lcuda): its calls
 * bind to the shim's exports through the dynamic linker. argv[1]: cap in MiB. */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static int fails;
#define EXPECT(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); fails++; } } while (0)

int main(int argc, char **argv) {
  size_t cap = (size_t)strtoull(argc > 1 ? argv[1] : "64", 0, 10) << 20;
  CUdevice dev;
  CUcontext ctx;
  EXPECT(cuInit(0) == CUDA_SUCCESS);
  EXPECT(cuDeviceGet(&dev, 0) == CUDA_SUCCESS);
  EXPECT(cuDevicePrimaryCtxRetain(&ctx, dev) == CUDA_SUCCESS);
  EXPECT(cuCtxSetCurrent(ctx) == CUDA_SUCCESS);
  size_t total = 0, f = 0, t = 0;
  EXPECT(cuDeviceTotalMem(&total, dev) == CUDA_SUCCESS);
  EXPECT(cuMemGetInfo(&f, &t) == CUDA_SUCCESS);
  printf("device_total=%zu info_total=%zu info_free=%zu\n", total, t, f);
  EXPECT(total == cap && t == cap && f == cap);
  CUdeviceptr a, b;
  EXPECT(cuMemAlloc(&a, cap - (2 << 20)) == CUDA_SUCCESS);
  EXPECT(cuMemAlloc(&b, 4 << 20) == CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(cuMemFree(a) == CUDA_SUCCESS);
  EXPECT(cuMemAlloc(&b, 4 << 20) == CUDA_SUCCESS);
  EXPECT(cuMemFree(b) == CUDA_SUCCESS);
  EXPECT(cuDevicePrimaryCtxRelease(dev) == CUDA_SUCCESS);
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

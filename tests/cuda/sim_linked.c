/* A driver-API program linked directly against the simulated libcuda
 * (-lcuda), no shim: basic driver calls and handle/argument checking. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>

static int fails = 0;
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { const char* n_ = "?"; cuGetErrorName(r_, &n_); printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #x, n_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

int main(void) {
  CUdevice dev; CUcontext ctx; int n = 0, ver = 0;
  EXPECT(cuMemAlloc(NULL, 16) == CUDA_ERROR_NOT_INITIALIZED);
  CU(cuInit(0));
  CU(cuDriverGetVersion(&ver)); printf("driver=%d\n", ver);
  CU(cuDeviceGetCount(&n)); CU(cuDeviceGet(&dev, 0));
  char name[128]; CU(cuDeviceGetName(name, sizeof name, dev)); printf("name=\"%s\"\n", name);
  size_t total = 0; CU(cuDeviceTotalMem(&total, dev)); printf("total=%zu\n", total);
  CU(cuCtxCreate(&ctx, NULL, 0, dev));
  CUdeviceptr d; CU(cuMemAlloc(&d, 1 << 20));
  unsigned h[256], h2[256]; for (int i = 0; i < 256; i++) h[i] = i * 3u;
  CU(cuMemcpyHtoD(d, h, sizeof h)); CU(cuMemcpyDtoH(h2, d, sizeof h2)); EXPECT(memcmp(h, h2, sizeof h) == 0);
  CU(cuMemsetD32(d, 0xdeadbeef, 256)); CU(cuMemcpyDtoH(h2, d, sizeof h2)); EXPECT(h2[17] == 0xdeadbeef);
  CUstream s; CUevent e; CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING)); CU(cuEventCreate(&e, CU_EVENT_DEFAULT));
  CU(cuMemsetD8Async(d, 7, 16, s)); CU(cuEventRecord(e, s)); CU(cuEventSynchronize(e)); CU(cuStreamSynchronize(s));
  CUdeviceptr base; size_t sz; CU(cuMemGetAddressRange(&base, &sz, d + 100)); EXPECT(base == d && sz == (1u << 20));
  unsigned mt = 0; CU(cuPointerGetAttribute(&mt, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d)); EXPECT(mt == CU_MEMORYTYPE_DEVICE);
  EXPECT(cuStreamDestroy((CUstream)(void*)0x1234) == CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuEventQuery((CUevent)(void*)&n) == CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuMemFree(d + 8) == CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemGetInfo(NULL, NULL) == CUDA_ERROR_INVALID_VALUE);
  const char* str = NULL; CU(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &str)); EXPECT(str && strcmp(str, "out of memory") == 0);
  CU(cuGetErrorName(CUDA_ERROR_INVALID_HANDLE, &str)); EXPECT(str && strcmp(str, "CUDA_ERROR_INVALID_HANDLE") == 0);
  CU(cuEventDestroy(e)); CU(cuStreamDestroy(s)); CU(cuMemFree(d)); CU(cuCtxDestroy(ctx));
  EXPECT(cuCtxDestroy(ctx) == CUDA_ERROR_INVALID_CONTEXT);
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

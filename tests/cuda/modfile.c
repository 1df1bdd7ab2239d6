/* -lcuda entry points a program links directly: cuModuleLoad from a file,
 * cuOccupancyMaxPotentialBlockSize, texture objects. argv[1]: a cubin or
 * fatbin holding kern.cu. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>

static int fails;
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

static size_t smem_for(int block) { return (size_t)block * 8; }

int main(int argc, char** argv) {
  CUdevice dev;
  CUcontext ctx;
  CU(cuInit(0));
  CU(cuDeviceGet(&dev, 0));
  CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CU(cuCtxSetCurrent(ctx));
  CUmodule m;
  EXPECT(cuModuleLoad(&m, "/nonexistent/kern.cubin") == CUDA_ERROR_FILE_NOT_FOUND);
  CU(cuModuleLoad(&m, argv[1]));
  CUfunction f;
  CU(cuModuleGetFunction(&f, m, "scale"));
  CUdeviceptr w;
  size_t wsize = 0;
  CU(cuModuleGetGlobal(&w, &wsize, m, "weights"));
  printf("global_size=%zu\n", wsize);
  EXPECT(cuModuleGetFunction(&f, m, "absent") == CUDA_ERROR_NOT_FOUND);
  CU(cuModuleGetFunction(&f, m, "scale"));
  int grid = 0, block = 0;
  CU(cuOccupancyMaxPotentialBlockSize(&grid, &block, f, NULL, 0, 0));
  printf("block=%d min_grid=%d\n", block, grid);
  int grid2 = 0, block2 = 0;
  CU(cuOccupancyMaxPotentialBlockSize(&grid2, &block2, f, smem_for, 0, 256));
  EXPECT(block2 <= 256 && block2 % 32 == 0 && grid2 > 0);
  CUdeviceptr d;
  CU(cuMemAlloc(&d, 1 << 20));
  CUDA_RESOURCE_DESC res;
  memset(&res, 0, sizeof res);
  res.resType = CU_RESOURCE_TYPE_LINEAR;
  res.res.linear.devPtr = d;
  res.res.linear.format = CU_AD_FORMAT_FLOAT;
  res.res.linear.numChannels = 1;
  res.res.linear.sizeInBytes = 1 << 20;
  CUDA_TEXTURE_DESC tex;
  memset(&tex, 0, sizeof tex);
  tex.filterMode = CU_TR_FILTER_MODE_POINT;
  tex.maxAnisotropy = 3;
  CUtexObject t = 0;
  CU(cuTexObjectCreate(&t, &res, &tex, NULL));
  EXPECT(t != 0);
  CUDA_RESOURCE_DESC back;
  memset(&back, 0xff, sizeof back);
  CU(cuTexObjectGetResourceDesc(&back, t));
  EXPECT(memcmp(&back, &res, sizeof res) == 0);
  CUDA_TEXTURE_DESC tback;
  CU(cuTexObjectGetTextureDesc(&tback, t));
  EXPECT(tback.maxAnisotropy == 3);
  CUDA_RESOURCE_VIEW_DESC view;
  EXPECT(cuTexObjectGetResourceViewDesc(&view, t) == CUDA_ERROR_INVALID_VALUE);
  CU(cuTexObjectDestroy(t));
  EXPECT(cuTexObjectDestroy(t) == CUDA_ERROR_INVALID_VALUE);
  printf("sizes=%zu,%zu,%zu\n", sizeof(CUDA_RESOURCE_DESC), sizeof(CUDA_TEXTURE_DESC), sizeof(CUDA_RESOURCE_VIEW_DESC));
  CU(cuMemFree(d));
  CU(cuModuleUnload(m));
  printf("OK FAILS=%d\n", fails);
  return fails != 0;
}

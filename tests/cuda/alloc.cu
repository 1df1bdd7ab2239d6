// Every allocation path through the runtime, with the ledger delta each one
// causes (cudaMemGetInfo reads the simulated ledger); VMM through
// cudaGetDriverEntryPointByVersion.
#include "common.cuh"
#include <cuda.h>
#include <cstring>

#define DRV(name, ver) do { cudaDriverEntryPointQueryResult q_; CK(cudaGetDriverEntryPointByVersion(#name, (void**)&p_##name, ver, cudaEnableDefault, &q_)); EXPECT(q_ == cudaDriverEntryPointSuccess && p_##name != nullptr); } while (0)
static CUresult (*p_cuMemGetAllocationGranularity)(size_t*, const CUmemAllocationProp*, CUmemAllocationGranularity_flags);
static CUresult (*p_cuMemCreate)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long);
static CUresult (*p_cuMemRelease)(CUmemGenericAllocationHandle);
static CUresult (*p_cuMemAddressReserve)(CUdeviceptr*, size_t, size_t, CUdeviceptr, unsigned long long);
static CUresult (*p_cuMemAddressFree)(CUdeviceptr, size_t);
static CUresult (*p_cuMemMap)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
static CUresult (*p_cuMemUnmap)(CUdeviceptr, size_t);
static CUresult (*p_cuMemSetAccess)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t);
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, (int)r_); g_fails++; } } while (0)

int main() {
  CK(cudaFree(0));
  size_t u0 = used_bytes();
  void* p = nullptr;
  CK(cudaMalloc(&p, 3 << 20)); printf("malloc_delta=%zu\n", used_bytes() - u0); CK(cudaFree(p));
  size_t pitch = 0;
  CK(cudaMallocPitch(&p, &pitch, 1000, 3000)); printf("pitch=%zu pitch_delta=%zu\n", pitch, used_bytes() - u0);
  {  // 2D round trip through the pitched allocation
    static char h[1000 * 3000], h2[1000 * 3000];
    for (int i = 0; i < 1000 * 3000; i++) h[i] = (char)(i * 13);
    CK(cudaMemcpy2D(p, pitch, h, 1000, 1000, 3000, cudaMemcpyHostToDevice));
    CK(cudaMemcpy2D(h2, 1000, p, pitch, 1000, 3000, cudaMemcpyDeviceToHost));
    EXPECT(memcmp(h, h2, sizeof h) == 0);
    cudaMemcpy3DParms c = {};
    c.srcPtr = make_cudaPitchedPtr(p, pitch, 1000, 3000);
    c.dstPtr = make_cudaPitchedPtr(h2, 100, 100, 10);
    c.extent = make_cudaExtent(100, 10, 1);
    memset(h2, 0, sizeof h2);
    CK(cudaMemcpy3D(&c));
    EXPECT(h2[100 * 9 + 99] == h[1000 * 9 + 99]);
  }
  CK(cudaFree(p));
  CK(cudaMallocManaged(&p, 1 << 20)); printf("managed_delta=%zu\n", used_bytes() - u0);
  cudaPointerAttributes pa; CK(cudaPointerGetAttributes(&pa, p)); EXPECT(pa.type == cudaMemoryTypeManaged);
  CK(cudaFree(p));
  cudaStream_t s; CK(cudaStreamCreate(&s));
  CK(cudaMallocAsync(&p, 5 << 20, s)); printf("async_delta=%zu\n", used_bytes() - u0);
  CK(cudaPointerGetAttributes(&pa, p)); EXPECT(pa.type == cudaMemoryTypeDevice && pa.device == 0);
  CK(cudaFreeAsync(p, s)); CK(cudaStreamSynchronize(s));
  cudaMemPool_t pool; cudaMemPoolProps props = {}; props.allocType = cudaMemAllocationTypePinned; props.location.type = cudaMemLocationTypeDevice; props.location.id = 0;
  CK(cudaMemPoolCreate(&pool, &props));
  CK(cudaMallocFromPoolAsync(&p, 1 << 20, pool, s)); printf("pool_delta=%zu\n", used_bytes() - u0);
  size_t cur = 0; CK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &cur)); EXPECT(cur == (2 << 20));
  CK(cudaFreeAsync(p, s)); CK(cudaStreamSynchronize(s)); CK(cudaMemPoolDestroy(pool));
  printf("after_async_delta=%zu\n", used_bytes() - u0);
  cudaChannelFormatDesc f = cudaCreateChannelDesc<float>();
  cudaArray_t arr; CK(cudaMallocArray(&arr, &f, 1024, 1024)); printf("array_delta=%zu\n", used_bytes() - u0); CK(cudaFreeArray(arr));
  cudaChannelFormatDesc u4 = cudaCreateChannelDesc<uchar4>();
  CK(cudaMalloc3DArray(&arr, &u4, make_cudaExtent(256, 256, 64))); printf("array3d_delta=%zu\n", used_bytes() - u0); CK(cudaFreeArray(arr));
  cudaMipmappedArray_t mm; CK(cudaMallocMipmappedArray(&mm, &f, make_cudaExtent(1024, 1024, 0), 3)); printf("mipmap_delta=%zu\n", used_bytes() - u0); CK(cudaFreeMipmappedArray(mm));
  printf("after_arrays_delta=%zu\n", used_bytes() - u0);
  // VMM
  DRV(cuMemGetAllocationGranularity, 12000); DRV(cuMemCreate, 12000); DRV(cuMemRelease, 12000); DRV(cuMemAddressReserve, 12000);
  DRV(cuMemAddressFree, 12000); DRV(cuMemMap, 12000); DRV(cuMemUnmap, 12000); DRV(cuMemSetAccess, 12000);
  if (g_fails) DONE();
  CUmemAllocationProp prop = {}; prop.type = CU_MEM_ALLOCATION_TYPE_PINNED; prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE; prop.location.id = 0;
  size_t gran = 0; CU(p_cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)); printf("granularity=%zu\n", gran);
  CUmemGenericAllocationHandle hdl; CU(p_cuMemCreate(&hdl, 2 * gran, &prop, 0)); printf("vmm_delta=%zu\n", used_bytes() - u0);
  CUdeviceptr va = 0; CU(p_cuMemAddressReserve(&va, 4 * gran, 0, 0, 0));
  CU(p_cuMemMap(va + gran, 2 * gran, 0, hdl, 0));
  CUmemAccessDesc acc = {}; acc.location = prop.location; acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  CU(p_cuMemSetAccess(va + gran, 2 * gran, &acc, 1));
  static char vh[64], vh2[64]; for (int i = 0; i < 64; i++) vh[i] = (char)i;
  CK(cudaMemcpy((void*)(va + 3 * gran - 32), vh, 32, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(vh2, (void*)(va + 3 * gran - 32), 32, cudaMemcpyDeviceToHost));
  EXPECT(memcmp(vh, vh2, 32) == 0);
  EXPECT_ERR(cudaMemcpy((void*)(va + 3 * gran - 16), vh, 32, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  CU(p_cuMemUnmap(va + gran, 2 * gran));
  CU(p_cuMemRelease(hdl));
  CU(p_cuMemAddressFree(va, 4 * gran));
  printf("end_delta=%zu\n", used_bytes() - u0);
  DONE();
}

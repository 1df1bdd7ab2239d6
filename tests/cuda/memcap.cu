// Every allocation path under a memory cap given as argv[1] (MiB): what fits
// succeeds, what does not fails with the driver's out-of-memory error, frees
// give the budget back, and cudaMemGetInfo reports the cap.
#include <cuda.h>
#include <cudaTypedefs.h>
#include "common.cuh"
#include "tslice.cuh"

static const size_t MiB = 1 << 20;

template <class F> static F entry(const char *name, unsigned version) {
  void *p = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion(name, &p, version, cudaEnableDefault, &q));
  EXPECT(p != nullptr && q == cudaDriverEntryPointSuccess);
  return (F)p;
}

int main(int argc, char **argv) {
  if (argc < 2) { printf("usage: memcap CAP_MIB\n"); return 2; }
  const size_t cap = strtoull(argv[1], 0, 10) * MiB;
  CK(cudaFree(0));
  size_t f0, t0;
  CK(cudaMemGetInfo(&f0, &t0));
  printf("info_total=%zu info_free=%zu\n", t0, f0);
  EXPECT(t0 == cap);
  EXPECT(f0 == cap);

  // cudaMalloc: fits, then the rest does not; OOM is the normal error and not sticky.
  void *a = 0, *b = 0;
  CK(cudaMalloc(&a, cap / 2));
  EXPECT_ERR(cudaMalloc(&b, cap / 2 + 4 * MiB), cudaErrorMemoryAllocation);
  CK(cudaMalloc(&b, cap / 4));
  size_t f1, t1;
  CK(cudaMemGetInfo(&f1, &t1));
  printf("after_alloc_free=%zu\n", f1);
  EXPECT(t1 == cap && f1 == cap - cap / 2 - cap / 4);
  CK(cudaFree(b));
  CK(cudaFree(a));
  CK(cudaMemGetInfo(&f1, &t1));
  EXPECT(f1 == cap);
  // After a refusal the process keeps working: the whole cap can be used.
  CK(cudaMalloc(&a, cap));
  EXPECT_ERR(cudaMalloc(&b, 1), cudaErrorMemoryAllocation);
  CK(cudaFree(a));

  // Stream-ordered allocation.
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  EXPECT_ERR(cudaMallocAsync(&a, cap + MiB, s), cudaErrorMemoryAllocation);
  CK(cudaMallocAsync(&a, cap - 2 * MiB, s));
  EXPECT_ERR(cudaMallocAsync(&b, 4 * MiB, s), cudaErrorMemoryAllocation);
  CK(cudaFreeAsync(a, s));
  CK(cudaStreamSynchronize(s));
  CK(cudaMallocAsync(&b, cap / 2, s));
  CK(cudaFreeAsync(b, s));
  CK(cudaStreamSynchronize(s));

  // Managed memory.
  EXPECT_ERR(cudaMallocManaged(&a, cap + MiB), cudaErrorMemoryAllocation);
  CK(cudaMallocManaged(&a, cap / 2));
  EXPECT_ERR(cudaMallocManaged(&b, cap / 2 + 4 * MiB), cudaErrorMemoryAllocation);
  CK(cudaFree(a));

  // Pitched allocation: charged at the real pitch x height.
  size_t pitch = 0;
  EXPECT_ERR(cudaMallocPitch(&a, &pitch, 1 * MiB, cap / MiB + 1), cudaErrorMemoryAllocation);
  CK(cudaMallocPitch(&a, &pitch, 1000, 1024));
  EXPECT(pitch >= 1000);
  CK(cudaFree(a));

  // Arrays.
  cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float4>();  // 16 bytes per element
  cudaArray_t arr = 0;
  size_t side = 1;
  while (side * side * 16 <= cap) side *= 2;  // side*side*16 > cap
  EXPECT_ERR(cudaMallocArray(&arr, &fmt, side, side), cudaErrorMemoryAllocation);
  CK(cudaMallocArray(&arr, &fmt, side / 2, side / 2));
  CK(cudaFreeArray(arr));
  cudaArray_t arr3 = 0;
  EXPECT_ERR(cudaMalloc3DArray(&arr3, &fmt, make_cudaExtent(side, side, 2)), cudaErrorMemoryAllocation);
  CK(cudaMalloc3DArray(&arr3, &fmt, make_cudaExtent(64, 64, 64)));
  CK(cudaFreeArray(arr3));

  // VMM (expandable segments, NCCL): cuMemCreate, through the runtime's driver entry points.
  auto memCreate = entry<PFN_cuMemCreate_v10020>("cuMemCreate", 10020);
  auto memRelease = entry<PFN_cuMemRelease_v10020>("cuMemRelease", 10020);
  auto addrReserve = entry<PFN_cuMemAddressReserve_v10020>("cuMemAddressReserve", 10020);
  auto addrFree = entry<PFN_cuMemAddressFree_v10020>("cuMemAddressFree", 10020);
  auto memMap = entry<PFN_cuMemMap_v10020>("cuMemMap", 10020);
  auto memUnmap = entry<PFN_cuMemUnmap_v10020>("cuMemUnmap", 10020);
  auto setAccess = entry<PFN_cuMemSetAccess_v10020>("cuMemSetAccess", 10020);
  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = 0;
  CUmemGenericAllocationHandle h1 = 0, h2 = 0;
  EXPECT(memCreate(&h1, cap + 2 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(memCreate(&h1, cap / 2, &prop, 0) == CUDA_SUCCESS);
  EXPECT(memCreate(&h2, cap / 2 + 2 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
  CUdeviceptr va = 0;
  EXPECT(addrReserve(&va, cap / 2, 0, 0, 0) == CUDA_SUCCESS);
  EXPECT(memMap(va, cap / 2, 0, h1, 0) == CUDA_SUCCESS);
  CUmemAccessDesc acc = {};
  acc.location = prop.location;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  EXPECT(setAccess(va, cap / 2, &acc, 1) == CUDA_SUCCESS);
  // Releasing the handle while it is mapped does not free the memory yet.
  EXPECT(memRelease(h1) == CUDA_SUCCESS);
  EXPECT(memCreate(&h2, cap / 2 + 2 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(memUnmap(va, cap / 2) == CUDA_SUCCESS);
  EXPECT(memCreate(&h2, cap / 2 + 2 * MiB, &prop, 0) == CUDA_SUCCESS);
  EXPECT(memRelease(h2) == CUDA_SUCCESS);
  // A retained handle keeps the memory alive after its creator's release
  // and the unmap; it stays charged until it too is released.
  auto retain = entry<PFN_cuMemRetainAllocationHandle_v11000>("cuMemRetainAllocationHandle", 11000);
  EXPECT(memCreate(&h1, cap / 2, &prop, 0) == CUDA_SUCCESS);
  EXPECT(memMap(va, cap / 2, 0, h1, 0) == CUDA_SUCCESS);
  CUmemGenericAllocationHandle hr = 0;
  EXPECT(retain(&hr, (void *)va) == CUDA_SUCCESS && hr == h1);
  EXPECT(memRelease(h1) == CUDA_SUCCESS);
  EXPECT(memUnmap(va, cap / 2) == CUDA_SUCCESS);
  EXPECT(memCreate(&h2, cap / 2 + 2 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(memRelease(hr) == CUDA_SUCCESS);
  EXPECT(memCreate(&h2, cap / 2 + 2 * MiB, &prop, 0) == CUDA_SUCCESS);
  EXPECT(memRelease(h2) == CUDA_SUCCESS);
  EXPECT(addrFree(va, cap / 2) == CUDA_SUCCESS);

  // What the shim counted.
  tslice_device_stats st;
  if (tslice_stats(0, &st)) {
    printf("hbm_limit=%llu hbm_used=%llu hbm_peak=%llu hbm_denials=%llu\n", (unsigned long long)st.hbm_limit,
           (unsigned long long)st.hbm_used, (unsigned long long)st.hbm_peak, (unsigned long long)st.hbm_denials);
    EXPECT(st.hbm_limited == 1 && st.hbm_limit == cap && st.hbm_used == 0);
  } else {
    printf("shim=absent\n");
  }
  CK(cudaStreamDestroy(s));
  DONE();
}

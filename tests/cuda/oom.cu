// Out of memory at the device size (run with SIMCUDA_MEM=1GiB): every
// allocation path reports cudaErrorMemoryAllocation, and the process keeps working.
#include "common.cuh"
#include <cuda.h>
int main() {
  size_t f = 0, t = 0; CK(cudaMemGetInfo(&f, &t));
  printf("total=%zu free=%zu\n", t, f);
  void *big = nullptr, *p = nullptr; size_t pitch;
  CK(cudaMalloc(&big, 768 << 20));
  EXPECT_ERR(cudaMalloc(&p, 512 << 20), cudaErrorMemoryAllocation);
  cudaStream_t s; CK(cudaStreamCreate(&s));
  EXPECT_ERR(cudaMallocAsync(&p, 512 << 20, s), cudaErrorMemoryAllocation);
  EXPECT_ERR(cudaMallocManaged(&p, 512 << 20), cudaErrorMemoryAllocation);
  EXPECT_ERR(cudaMallocPitch(&p, &pitch, 1 << 20, 512), cudaErrorMemoryAllocation);
  CUresult (*create)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long) = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion("cuMemCreate", (void**)&create, 12000, cudaEnableDefault, &q));
  CUmemAllocationProp prop = {}; prop.type = CU_MEM_ALLOCATION_TYPE_PINNED; prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  CUmemGenericAllocationHandle h;
  EXPECT(create && create(&h, 512 << 20, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
  CK(cudaFree(big));
  CK(cudaMalloc(&p, 512 << 20));
  CK(cudaFree(p));
  CK(cudaMemGetInfo(&f, &t));
  printf("free_end=%zu\n", f);
  DONE();
}

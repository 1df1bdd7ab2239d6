// Thread block cluster occupancy (what cuBLAS asks before its first GEMM):
// cudaOccupancyMaxPotentialClusterSize and cudaOccupancyMaxActiveClusters.
#include "common.cuh"
__global__ void k(float* x) { if (x) x[threadIdx.x] = 0; }
int main() {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(128, 1, 1);
  cfg.blockDim = dim3(256, 1, 1);
  int size = -1, n = -1;
  CK(cudaOccupancyMaxPotentialClusterSize(&size, (void*)k, &cfg));
  printf("potential=%d\n", size);
  CK(cudaFuncSetAttribute((void*)k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  CK(cudaOccupancyMaxPotentialClusterSize(&size, (void*)k, &cfg));
  printf("potential_nonportable=%d\n", size);
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 2; attr.val.clusterDim.y = 1; attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  CK(cudaOccupancyMaxActiveClusters(&n, (void*)k, &cfg));
  printf("active_2=%d\n", n);
  attr.val.clusterDim.x = 16;
  CK(cudaOccupancyMaxActiveClusters(&n, (void*)k, &cfg));
  printf("active_16=%d\n", n);
  attr.val.clusterDim.x = 3;  // 128 blocks do not split into clusters of 3
  EXPECT_ERR(cudaOccupancyMaxActiveClusters(&n, (void*)k, &cfg), cudaErrorInvalidClusterSize);
  CK(cudaFuncSetAttribute((void*)k, cudaFuncAttributeNonPortableClusterSizeAllowed, 0));
  attr.val.clusterDim.x = 16;  // beyond the portable 8 now
  EXPECT_ERR(cudaOccupancyMaxActiveClusters(&n, (void*)k, &cfg), cudaErrorInvalidClusterSize);
  DONE();
}

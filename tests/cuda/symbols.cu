// __device__ variables and kernels found in the fatbin: cudaMemcpyToSymbol /
// FromSymbol round trips and cudaGetSymbolSize need the driver to know each
// global's size, cudaFuncGetAttributes the kernel. Built plain and with
// `-compress-mode=size` (zstd-compressed cubins, as cuBLAS and PyTorch ship).
#include "common.cuh"
__device__ int table[1000];
__device__ double scale;
__global__ void use(int n) { table[threadIdx.x % 1000] += (int)(n * scale); }
int main() {
  int h[1000], back[1000];
  for (int i = 0; i < 1000; i++) h[i] = i * 7;
  size_t size = 0;
  CK(cudaGetSymbolSize(&size, table));
  printf("table_size=%zu\n", size);
  EXPECT(size == sizeof(h));
  CK(cudaGetSymbolSize(&size, scale));
  EXPECT(size == sizeof(double));
  CK(cudaMemcpyToSymbol(table, h, sizeof(h)));
  CK(cudaMemcpyFromSymbol(back, table, sizeof(back)));
  int bad = 0; for (int i = 0; i < 1000; i++) bad += back[i] != h[i];
  EXPECT(bad == 0);
  double s = 2.5;
  CK(cudaMemcpyToSymbol(scale, &s, sizeof(s)));
  cudaFuncAttributes attr;
  CK(cudaFuncGetAttributes(&attr, use));
  use<<<1, 32>>>(3);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  DONE();
}

// A tenant's view of its GPU: what the device says it has, and what
// happens when it allocates. Ordinary CUDA runtime code, unchanged by tslice.
//   tenant SIZE_GIB [SIZE_GIB...]   allocate each size in turn (kept until exit)
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

int main(int argc, char **argv) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) { printf("no CUDA device\n"); return 1; }
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  printf("  device        %s\n", p.name);
  printf("  memory        %.1f GiB total, %.1f GiB free (cudaMemGetInfo)\n", total_b / 1073741824.0, free_b / 1073741824.0);
  int refused = 0;
  for (int i = 1; i < argc; i++) {
    double gib = atof(argv[i]);
    void *ptr = nullptr;
    cudaError_t e = cudaMalloc(&ptr, (size_t)(gib * 1073741824.0));
    if (e == cudaSuccess) {
      printf("  cudaMalloc(%4.1f GiB)  ok\n", gib);
    } else {
      printf("  cudaMalloc(%4.1f GiB)  refused: %s (%s)\n", gib, cudaGetErrorString(e), cudaGetErrorName(e));
      cudaGetLastError();
      refused++;
    }
  }
  cudaMemGetInfo(&free_b, &total_b);
  printf("  memory        %.1f GiB free after the allocations\n", free_b / 1073741824.0);
  return 0;
}

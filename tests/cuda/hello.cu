// The reference "hello": allocate, launch, synchronize, round-trip data.
#include "common.cuh"
__global__ void add(float* x, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] += 1.0f; }
int main() {
  const int n = 1 << 18;
  float *d = nullptr, *h = (float*)malloc(n * sizeof(float)), *h2 = (float*)malloc(n * sizeof(float));
  for (int i = 0; i < n; i++) h[i] = (float)i;
  size_t before = used_bytes();
  CK(cudaMalloc(&d, n * sizeof(float)));
  printf("malloc_delta=%zu\n", used_bytes() - before);
  CK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
  add<<<n / 256, 256>>>(d, n);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(h2, d, n * sizeof(float), cudaMemcpyDeviceToHost));
  int bad = 0; for (int i = 0; i < n; i++) bad += h2[i] != (float)i;
  EXPECT(bad == 0);  // kernels are not executed: data changes only by copies
  CK(cudaMemset(d, 0, n * sizeof(float)));
  CK(cudaMemcpy(h2, d, n * sizeof(float), cudaMemcpyDeviceToHost));
  bad = 0; for (int i = 0; i < n; i++) bad += h2[i] != 0.0f;
  EXPECT(bad == 0);
  EXPECT_ERR(cudaMemcpy(h2, (char*)d + (64 << 20), 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  CK(cudaFree(d));
  printf("after_free_delta=%zu\n", used_bytes() - before);
  DONE();
}

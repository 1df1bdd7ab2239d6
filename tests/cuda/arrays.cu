// Copies to and from CUDA arrays through the runtime (cudaMemcpy2DToArray,
// cudaMemcpy3D host -> array spanning rows and slices, array -> host, array
// -> array), checked by reading the data back; out-of-bounds regions refused.
#include "common.cuh"
int main() {
  const int W = 64, H = 16, D = 4;
  cudaChannelFormatDesc ch = cudaCreateChannelDesc<float>();
  cudaArray_t a2, a3, b3;
  CK(cudaMallocArray(&a2, &ch, W, H));
  static float src[D][H][W], back[D][H][W];
  for (int z = 0; z < D; z++) for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) src[z][y][x] = z * 10000 + y * 100 + x;
  CK(cudaMemcpy2DToArray(a2, 0, 0, src[0], W * sizeof(float), W * sizeof(float), H, cudaMemcpyHostToDevice));
  memset(back, 0, sizeof back);
  CK(cudaMemcpy2DFromArray(back[0], W * sizeof(float), a2, 0, 0, W * sizeof(float), H, cudaMemcpyDeviceToHost));
  EXPECT(memcmp(back[0], src[0], sizeof src[0]) == 0);
  // A sub-rectangle at an offset.
  float sub[4][8];
  CK(cudaMemcpy2DFromArray(sub, sizeof sub[0], a2, 2 * sizeof(float), 3, sizeof sub[0], 4, cudaMemcpyDeviceToHost));
  EXPECT(sub[0][0] == src[0][3][2] && sub[3][7] == src[0][6][9]);
  EXPECT_ERR(cudaMemcpy2DFromArray(sub, sizeof sub[0], a2, (W - 4) * sizeof(float), 0, sizeof sub[0], 4, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  // 3D: host -> array, spanning rows and slices, then array -> array -> host.
  cudaExtent ext = make_cudaExtent(W, H, D);
  CK(cudaMalloc3DArray(&a3, &ch, ext));
  CK(cudaMalloc3DArray(&b3, &ch, ext));
  cudaMemcpy3DParms p = {};
  p.srcPtr = make_cudaPitchedPtr(src, W * sizeof(float), W, H);
  p.dstArray = a3;
  p.extent = ext;
  p.kind = cudaMemcpyHostToDevice;
  CK(cudaMemcpy3D(&p));
  cudaMemcpy3DParms q = {};
  q.srcArray = a3;
  q.dstArray = b3;
  q.extent = ext;
  q.kind = cudaMemcpyDeviceToDevice;
  CK(cudaMemcpy3D(&q));
  memset(back, 0, sizeof back);
  cudaMemcpy3DParms r = {};
  r.srcArray = b3;
  r.dstPtr = make_cudaPitchedPtr(back, W * sizeof(float), W, H);
  r.extent = ext;
  r.kind = cudaMemcpyDeviceToHost;
  CK(cudaMemcpy3D(&r));
  EXPECT(memcmp(back, src, sizeof src) == 0);
  CK(cudaFreeArray(a2));
  CK(cudaFreeArray(a3));
  CK(cudaFreeArray(b3));
  DONE();
}

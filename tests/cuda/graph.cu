// Graphs: stream capture of sim_spin kernels plus a memset, launched as a
// graph (elapsed = sum of its kernels), and an explicitly built graph.
#include "common.cuh"
int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  int* d = nullptr; CK(cudaMalloc(&d, 1 << 20));
  CK(cudaMemset(d, 0, 1 << 20));
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus st; CK(cudaStreamIsCapturing(s, &st)); EXPECT(st == cudaStreamCaptureStatusActive);
  for (int k = 0; k < 4; k++) sim_spin<<<1, 1, 0, s>>>(3000000ull);
  CK(cudaMemsetAsync(d, 0x11, 4096, s));
  cudaGraph_t g; CK(cudaStreamEndCapture(s, &g));
  size_t nodes = 0; CK(cudaGraphGetNodes(g, nullptr, &nodes)); printf("captured_nodes=%zu\n", nodes);
  int h = 0; CK(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost)); EXPECT(h == 0);  // captured, not run
  cudaGraphExec_t ge; CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaEventRecord(a, s));
  CK(cudaGraphLaunch(ge, s));
  CK(cudaGraphLaunch(ge, s));
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0; CK(cudaEventElapsedTime(&ms, a, b)); printf("capture_elapsed_ms=%.3f\n", ms);
  CK(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost)); EXPECT(h == 0x11111111);
  // explicit graph: two dependent 5 ms kernel nodes
  cudaGraph_t g2; CK(cudaGraphCreate(&g2, 0));
  unsigned long long ns = 5000000ull; void* args[] = {&ns};
  cudaKernelNodeParams kp = {}; kp.func = (void*)sim_spin; kp.gridDim = dim3(1); kp.blockDim = dim3(1); kp.kernelParams = args;
  cudaGraphNode_t n1, n2; CK(cudaGraphAddKernelNode(&n1, g2, nullptr, 0, &kp)); CK(cudaGraphAddKernelNode(&n2, g2, &n1, 1, &kp));
  cudaGraphExec_t ge2; CK(cudaGraphInstantiate(&ge2, g2, 0));
  CK(cudaEventRecord(a, s)); CK(cudaGraphLaunch(ge2, s)); CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
  CK(cudaEventElapsedTime(&ms, a, b)); printf("explicit_elapsed_ms=%.3f\n", ms);
  CK(cudaGraphExecDestroy(ge)); CK(cudaGraphExecDestroy(ge2)); CK(cudaGraphDestroy(g)); CK(cudaGraphDestroy(g2));
  CK(cudaFree(d));
  DONE();
}

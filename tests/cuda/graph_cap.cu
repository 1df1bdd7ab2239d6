// Graph memory under a 100 MiB cap (TSLICE_HBM_LIMIT): a graph whose
// allocation node needs 64 MiB cannot launch while 50 MiB are held
// elsewhere; once launched, the graph's memory counts against the cap
// until trimmed; a captured cudaMallocAsync is charged only when its graph
// runs. Prints what the tenant saw; the test checks the device's ledger too.
#include "common.cuh"
int main() {
  const size_t MB = 1 << 20;
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* held = nullptr; CK(cudaMalloc(&held, 50 * MB));
  cudaGraph_t g; CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* p = nullptr; CK(cudaMallocAsync(&p, 64 * MB, s));
  CK(cudaMemsetAsync(p, 1, 4096, s));
  CK(cudaStreamEndCapture(s, &g));
  // Capturing the allocation charged nothing.
  printf("captured_used_mb=%zu\n", used_bytes() / MB);
  cudaGraphExec_t ge; CK(cudaGraphInstantiate(&ge, g, 0));
  cudaError_t e = cudaGraphLaunch(ge, s);
  printf("launch_over_cap=%s\n", cudaGetErrorName(e));
  (void)cudaGetLastError();
  CK(cudaStreamSynchronize(s));
  CK(cudaFree(held));
  CK(cudaGraphLaunch(ge, s)); CK(cudaStreamSynchronize(s));
  printf("launched_used_mb=%zu\n", used_bytes() / MB);
  // The graph holds 64 of the 100 MiB: 50 more do not fit...
  void* more = nullptr;
  e = cudaMalloc(&more, 50 * MB);
  printf("malloc_beside_graph=%s\n", cudaGetErrorName(e));
  (void)cudaGetLastError();
  // ...until the graph's memory is trimmed.
  CK(cudaDeviceGraphMemTrim(0));
  printf("trimmed_used_mb=%zu\n", used_bytes() / MB);
  CK(cudaMalloc(&more, 50 * MB));
  e = cudaGraphLaunch(ge, s);
  printf("relaunch_over_cap=%s\n", cudaGetErrorName(e));
  (void)cudaGetLastError();
  CK(cudaFree(more));
  CK(cudaGraphLaunch(ge, s)); CK(cudaStreamSynchronize(s));
  CK(cudaGraphExecDestroy(ge));
  printf("destroyed_used_mb=%zu\n", used_bytes() / MB);
  CK(cudaGraphDestroy(g));
  DONE();
}

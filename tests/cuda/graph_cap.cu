// Graph memory under a 100 MiB cap (TSLICE_HBM_LIMIT): a graph whose
// allocation node needs 64 MiB cannot launch while 50 MiB are held
// elsewhere; once launched, the graph's memory counts against the cap
// until trimmed (and past the executable's destruction, as the device's
// graph pool keeps it); a captured cudaMallocAsync is charged only when its
// graph runs. Prints what the tenant saw; the test checks the device's ledger too.
#include "common.cuh"
int main() {
  const size_t MB = 1 << 20;
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* held = nullptr; CK(cudaMalloc(&held, 50 * MB));
  cudaGraph_t g; CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* p = nullptr; CK(cudaMallocAsync(&p, 64 * MB, s));
  CK(cudaMemsetAsync(p, 1, 4096, s));
  CK(cudaFreeAsync(p, s));
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
  // Made, launched and destroyed again and again, executables reuse the
  // graph pool's memory: its charge moves, it is not taken twice.
  int relaunched = 0;
  for (int i = 0; i < 3; i++) {
    cudaGraphExec_t x; CK(cudaGraphInstantiate(&x, g, 0));
    if (cudaGraphLaunch(x, s) == cudaSuccess) relaunched++;
    (void)cudaGetLastError();
    CK(cudaStreamSynchronize(s));
    CK(cudaGraphExecDestroy(x));
  }
  printf("reinstantiated_launches=%d\n", relaunched);
  printf("reinstantiated_used_mb=%zu\n", used_bytes() / MB);
  CK(cudaDeviceGraphMemTrim(0));
  printf("destroyed_trimmed_mb=%zu\n", used_bytes() / MB);
  CK(cudaGraphDestroy(g));
  // A launch that fails after the driver backed its memory (a memset node
  // on an address that is no device memory) keeps nothing: the graph's
  // memory is neither held by the driver nor charged.
  cudaGraph_t gf; CK(cudaGraphCreate(&gf, 0));
  cudaMemAllocNodeParams ap = alloc_node_params(64 * MB);
  cudaGraphNode_t an, cn, fn;
  CK(cudaGraphAddMemAllocNode(&an, gf, nullptr, 0, &ap));
  cudaMemsetParams bad = {}; bad.dst = (void*)0x10000; bad.value = 1; bad.elementSize = 4; bad.width = 16; bad.height = 1;
  CK(cudaGraphAddMemsetNode(&cn, gf, &an, 1, &bad));
  CK(cudaGraphAddMemFreeNode(&fn, gf, &cn, 1, ap.dptr));
  cudaGraphExec_t gfe; CK(cudaGraphInstantiate(&gfe, gf, 0));
  e = cudaGraphLaunch(gfe, s);
  printf("failed_launch=%s\n", cudaGetErrorName(e));
  (void)cudaGetLastError();
  printf("after_failed_launch_mb=%zu\n", used_bytes() / MB);
  CK(cudaGraphExecDestroy(gfe)); CK(cudaGraphDestroy(gf));
  DONE();
}

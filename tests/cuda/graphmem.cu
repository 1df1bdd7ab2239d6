// Graph host nodes, memory-allocation/free nodes (explicit and captured
// from cudaMallocAsync/cudaFreeAsync), executable kernel-node updates, and
// when graph memory is charged: from upload or first launch until trim or
// destruction (cudaMemGetInfo reads the simulated device's ledger).
#include "common.cuh"
#include <atomic>
#include <unistd.h>

static std::atomic<int> g_host{0};
static void CUDART_CB host_fn(void* p) { g_host.fetch_add(*(int*)p); }

static float timed(cudaGraphExec_t ge, cudaStream_t s) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, s)); CK(cudaGraphLaunch(ge, s)); CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
  float ms = 0; CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a)); CK(cudaEventDestroy(b));
  return ms;
}

int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const size_t MB = 1 << 20;
  size_t base = used_bytes();
  // 1. kernel -> host node -> kernel; update the kernels' duration in the executable.
  cudaGraph_t g; CK(cudaGraphCreate(&g, 0));
  unsigned long long ns = 4000000ull; void* args[] = {&ns};
  cudaKernelNodeParams kp = {}; kp.func = (void*)sim_spin; kp.gridDim = dim3(1); kp.blockDim = dim3(1); kp.kernelParams = args;
  int add = 5;
  cudaHostNodeParams hp = {}; hp.fn = host_fn; hp.userData = &add;
  cudaGraphNode_t k1, h1, k2;
  CK(cudaGraphAddKernelNode(&k1, g, nullptr, 0, &kp));
  CK(cudaGraphAddHostNode(&h1, g, &k1, 1, &hp));
  CK(cudaGraphAddKernelNode(&k2, g, &h1, 1, &kp));
  cudaGraphNodeType t; CK(cudaGraphNodeGetType(h1, &t)); EXPECT(t == cudaGraphNodeTypeHost);
  cudaGraphExec_t ge; CK(cudaGraphInstantiate(&ge, g, 0));
  printf("host_graph_ms=%.3f\n", timed(ge, s));
  printf("host_calls=%d\n", g_host.load());
  unsigned long long ns2 = 1000000ull; void* args2[] = {&ns2};
  kp.kernelParams = args2;
  CK(cudaGraphExecKernelNodeSetParams(ge, k1, &kp));
  CK(cudaGraphExecKernelNodeSetParams(ge, k2, &kp));
  printf("updated_graph_ms=%.3f\n", timed(ge, s));
  printf("host_calls2=%d\n", g_host.load());
  // A whole-graph update from a graph of the same shape with 2 ms kernels...
  cudaGraph_t g2; CK(cudaGraphCreate(&g2, 0));
  unsigned long long ns3 = 2000000ull; void* args3[] = {&ns3};
  kp.kernelParams = args3;
  cudaGraphNode_t a1, a2, a3;
  CK(cudaGraphAddKernelNode(&a1, g2, nullptr, 0, &kp));
  CK(cudaGraphAddHostNode(&a2, g2, &a1, 1, &hp));
  CK(cudaGraphAddKernelNode(&a3, g2, &a2, 1, &kp));
  cudaGraphExecUpdateResultInfo info = {};
  CK(cudaGraphExecUpdate(ge, g2, &info));
  EXPECT(info.result == cudaGraphExecUpdateSuccess);
  printf("whole_update_ms=%.3f\n", timed(ge, s));
  // ...and one of another shape, refused with the node that differs.
  cudaGraphNode_t a4; CK(cudaGraphAddEmptyNode(&a4, g2, &a3, 1));
  EXPECT_ERR(cudaGraphExecUpdate(ge, g2, &info), cudaErrorGraphExecUpdateFailure);
  EXPECT(info.result == cudaGraphExecUpdateErrorTopologyChanged);
  CK(cudaGraphDestroy(g2));
  CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g));

  // 2. an explicit allocation node, a memset on its memory, a free node.
  cudaGraph_t gm; CK(cudaGraphCreate(&gm, 0));
  cudaMemAllocNodeParams ap = alloc_node_params(64 * MB);
  cudaGraphNode_t an, mn, fn;
  CK(cudaGraphAddMemAllocNode(&an, gm, nullptr, 0, &ap));
  EXPECT(ap.dptr != nullptr);
  cudaMemsetParams mp = {}; mp.dst = ap.dptr; mp.value = 7; mp.elementSize = 1; mp.width = 4096; mp.height = 1;
  CK(cudaGraphAddMemsetNode(&mn, gm, &an, 1, &mp));
  CK(cudaGraphAddMemFreeNode(&fn, gm, &mn, 1, ap.dptr));
  CK(cudaGraphNodeGetType(an, &t)); EXPECT(t == cudaGraphNodeTypeMemAlloc);
  cudaGraphExec_t gme; CK(cudaGraphInstantiate(&gme, gm, 0));
  printf("instantiated_mb=%zu\n", (used_bytes() - base) / MB);
  // A second executable of a graph with allocation nodes is refused.
  cudaGraphExec_t twice; EXPECT(cudaGraphInstantiate(&twice, gm, 0) != cudaSuccess); (void)cudaGetLastError();
  CK(cudaGraphLaunch(gme, s)); CK(cudaStreamSynchronize(s));
  printf("launched_mb=%zu\n", (used_bytes() - base) / MB);
  size_t attr = 0; CK(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrUsedMemCurrent, &attr));
  printf("graph_attr_mb=%zu\n", attr / MB);
  CK(cudaGraphLaunch(gme, s)); CK(cudaStreamSynchronize(s));
  printf("relaunched_mb=%zu\n", (used_bytes() - base) / MB);
  CK(cudaDeviceGraphMemTrim(0));
  printf("trimmed_mb=%zu\n", (used_bytes() - base) / MB);
  CK(cudaGraphUpload(gme, s)); CK(cudaStreamSynchronize(s));
  printf("uploaded_mb=%zu\n", (used_bytes() - base) / MB);
  CK(cudaGraphExecDestroy(gme));
  // The device's graph pool keeps it past destruction, until a trim.
  printf("destroyed_mb=%zu\n", (used_bytes() - base) / MB);
  CK(cudaDeviceGraphMemTrim(0));
  printf("destroyed_trimmed_mb=%zu\n", (used_bytes() - base) / MB);
  // Executables made, launched and destroyed again and again reuse the pool.
  for (int i = 0; i < 4; i++) {
    cudaGraphExec_t x; CK(cudaGraphInstantiate(&x, gm, 0));
    CK(cudaGraphLaunch(x, s)); CK(cudaStreamSynchronize(s));
    CK(cudaGraphExecDestroy(x));
  }
  printf("reused_mb=%zu\n", (used_bytes() - base) / MB);
  CK(cudaDeviceGraphMemTrim(0));
  CK(cudaGraphDestroy(gm));

  // 2b. an allocation the graph does not free: no relaunch until it is freed.
  cudaGraph_t gk; CK(cudaGraphCreate(&gk, 0));
  cudaMemAllocNodeParams kp2 = alloc_node_params(8 * MB);
  cudaGraphNode_t kn; CK(cudaGraphAddMemAllocNode(&kn, gk, nullptr, 0, &kp2));
  cudaGraphExec_t gke; CK(cudaGraphInstantiate(&gke, gk, 0));
  CK(cudaGraphLaunch(gke, s)); CK(cudaStreamSynchronize(s));
  // A trim leaves an allocation that is not freed yet alone.
  CK(cudaDeviceGraphMemTrim(0));
  CK(cudaMemset(kp2.dptr, 3, 4096));
  unsigned kv = 0; CK(cudaMemcpy(&kv, kp2.dptr, 4, cudaMemcpyDeviceToHost)); EXPECT(kv == 0x03030303);
  EXPECT_ERR(cudaGraphLaunch(gke, s), cudaErrorInvalidValue);
  CK(cudaFree(kp2.dptr));
  CK(cudaGraphLaunch(gke, s)); CK(cudaStreamSynchronize(s));
  CK(cudaFreeAsync(kp2.dptr, s)); CK(cudaStreamSynchronize(s));
  CK(cudaGraphExecDestroy(gke)); CK(cudaGraphDestroy(gk));
  CK(cudaDeviceGraphMemTrim(0));

  // 3. captured stream-ordered allocation: allocation and free nodes.
  cudaGraph_t gc; CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* p = nullptr; CK(cudaMallocAsync(&p, 32 * MB, s));
  CK(cudaMemsetAsync(p, 1, 4096, s));
  CK(cudaLaunchHostFunc(s, host_fn, &add));
  CK(cudaFreeAsync(p, s));
  CK(cudaStreamEndCapture(s, &gc));
  size_t n = 0; CK(cudaGraphGetNodes(gc, nullptr, &n)); printf("captured_nodes=%zu\n", n);
  printf("captured_mb=%zu\n", (used_bytes() - base) / MB);
  cudaGraphExec_t gce; CK(cudaGraphInstantiate(&gce, gc, 0));
  CK(cudaGraphLaunch(gce, s)); CK(cudaStreamSynchronize(s));
  printf("captured_launched_mb=%zu\n", (used_bytes() - base) / MB);
  printf("host_calls3=%d\n", g_host.load());
  CK(cudaGraphExecDestroy(gce)); CK(cudaGraphDestroy(gc));
  CK(cudaDeviceGraphMemTrim(0));
  printf("end_mb=%zu\n", (used_bytes() - base) / MB);

  // 4. what PyTorch's graph code also calls: user objects owned by graphs
  // and their executables, capture into an existing graph, dependency updates
  // during capture, dependency queries.
  static std::atomic<int> destroyed{0};
  cudaUserObject_t uo;
  CK(cudaUserObjectCreate(&uo, &destroyed, [](void* p) { ((std::atomic<int>*)p)->fetch_add(1); }, 1, cudaUserObjectNoDestructorSync));
  cudaGraph_t gu; CK(cudaGraphCreate(&gu, 0));
  CK(cudaGraphRetainUserObject(gu, uo, 1, cudaGraphUserObjectMove));
  cudaGraphNode_t e0; CK(cudaGraphAddEmptyNode(&e0, gu, nullptr, 0));
  CK(cudaStreamBeginCaptureToGraph(s, gu, &e0, nullptr, 1, cudaStreamCaptureModeGlobal));
  sim_spin<<<1, 1, 0, s>>>(1000000ull);
  cudaGraphNode_t e1; CK(cudaGraphAddEmptyNode(&e1, gu, nullptr, 0));
  CK(cudaStreamUpdateCaptureDependencies(s, &e1, nullptr, 1, cudaStreamAddCaptureDependencies));
  sim_spin<<<1, 1, 0, s>>>(1000000ull);
  cudaGraph_t same; CK(cudaStreamEndCapture(s, &same));
  EXPECT(same == gu);
  size_t nn = 0; CK(cudaGraphGetNodes(gu, nullptr, &nn)); printf("capture_into_nodes=%zu\n", nn);
  // The last kernel depends on the first kernel and on e1.
  cudaGraphNode_t all[8]; size_t na = 8; CK(cudaGraphGetNodes(gu, all, &na));
  size_t nd = 0; CK(cudaGraphNodeGetDependencies(all[na - 1], nullptr, nullptr, &nd)); printf("last_deps=%zu\n", nd);
  size_t nt = 0; CK(cudaGraphNodeGetDependentNodes(e0, nullptr, nullptr, &nt)); printf("e0_dependents=%zu\n", nt);
  cudaGraphExec_t gue; CK(cudaGraphInstantiate(&gue, gu, 0));
  printf("captured_into_ms=%.3f\n", timed(gue, s));
  CK(cudaGraphDestroy(gu));
  CK(cudaDeviceSynchronize());
  printf("destroyed_with_exec_alive=%d\n", destroyed.load());
  // Destroyed while a launch of it is still in its stream: the user object
  // lives until that work is done.
  CK(cudaGraphLaunch(gue, s));
  CK(cudaLaunchHostFunc(s, [](void*) { usleep(200000); }, nullptr));
  CK(cudaGraphExecDestroy(gue));
  printf("destroyed_while_running=%d\n", destroyed.load());
  CK(cudaStreamSynchronize(s));
  for (int i = 0; i < 1000 && destroyed.load() == 0; i++) usleep(1000);
  printf("destroyed_after_exec=%d\n", destroyed.load());
  DONE();
}

// Peer access between devices, profiler start/stop, stream attributes: what
// frameworks call at start (PyTorch enables peer access between its GPUs,
// NCCL and cuBLAS set stream attributes, profilers bracket regions).
#include "common.cuh"
// (cuda_profiler_api.h is not in the pip toolkit; libcudart exports these.)
extern "C" cudaError_t cudaProfilerStart(void);
extern "C" cudaError_t cudaProfilerStop(void);
int main() {
  int can = 0;
  CK(cudaDeviceCanAccessPeer(&can, 0, 1));
  EXPECT(can == 1);
  CK(cudaSetDevice(0));
  CK(cudaDeviceEnablePeerAccess(1, 0));
  EXPECT_ERR(cudaDeviceEnablePeerAccess(1, 0), cudaErrorPeerAccessAlreadyEnabled);
  EXPECT_ERR(cudaDeviceEnablePeerAccess(0, 0), cudaErrorInvalidDevice);
  CK(cudaDeviceDisablePeerAccess(1));
  EXPECT_ERR(cudaDeviceDisablePeerAccess(1), cudaErrorPeerAccessNotEnabled);
  CK(cudaSetDevice(1));
  CK(cudaDeviceEnablePeerAccess(0, 0));
  CK(cudaProfilerStart());
  CK(cudaProfilerStop());
  int lo = 0, hi = 0;
  CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  cudaStream_t s;
  CK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, hi));
  cudaStreamAttrValue v = {};
  CK(cudaStreamGetAttribute(s, cudaStreamAttributePriority, &v));
  EXPECT(v.priority == hi);
  v = {};
  v.syncPolicy = cudaSyncPolicyBlockingSync;
  CK(cudaStreamSetAttribute(s, cudaStreamAttributeSynchronizationPolicy, &v));
  cudaStreamAttrValue back = {};
  CK(cudaStreamGetAttribute(s, cudaStreamAttributeSynchronizationPolicy, &back));
  EXPECT(back.syncPolicy == cudaSyncPolicyBlockingSync);
  v = {};
  v.accessPolicyWindow.num_bytes = 1 << 20;
  v.accessPolicyWindow.hitRatio = 0.5f;
  v.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
  v.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
  CK(cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &v));
  back = {};
  CK(cudaStreamGetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &back));
  EXPECT(back.accessPolicyWindow.num_bytes == (1 << 20) && back.accessPolicyWindow.hitRatio == 0.5f);
  CK(cudaStreamDestroy(s));
  DONE();
}

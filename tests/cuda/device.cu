// Device enumeration and properties, and a per-device allocation.
#include "common.cuh"
int main() {
  int n = 0; CK(cudaGetDeviceCount(&n));
  printf("count=%d\n", n);
  for (int i = 0; i < n; i++) {
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, i));
    printf("dev%d name=\"%s\" cc=%d.%d sms=%d mem=%zu bus=%d warp=%d maxthreads=%d uuid=", i, p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem, p.pciBusID, p.warpSize, p.maxThreadsPerBlock);
    for (int k = 0; k < 16; k++) printf("%02x", (unsigned char)p.uuid.bytes[k]);
    printf("\n");
    char bus[32]; CK(cudaDeviceGetPCIBusId(bus, sizeof bus, i));
    int back = -1; CK(cudaDeviceGetByPCIBusId(&back, bus));
    EXPECT(back == i);
    int v = 0; CK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, i)); EXPECT(v == 9);
    CK(cudaSetDevice(i));
    void* d = nullptr; size_t u0 = used_bytes();
    CK(cudaMalloc(&d, (size_t)(i + 1) << 20));
    printf("dev%d_delta=%zu\n", i, used_bytes() - u0);
    CK(cudaFree(d));
    if (n > 1) { int can = 0; CK(cudaDeviceCanAccessPeer(&can, i, (i + 1) % n)); EXPECT(can == 1); }
  }
  DONE();
}

/* The simulated NVML as a tool (or nvidia-smi) reads it: devices, names,
 * UUIDs equal to the driver's, PCI ids, memory, running processes with their
 * memory, utilization. Linked with -lnvidia-ml (and -lcuda, to have a
 * process on the device: it allocates `MIB` MiB and spins `SPIN_MS` ms).
 * Prints key=value lines; OK FAILS=0 at the end. */
#include <cuda.h>
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails;
#define NV(x) do { nvmlReturn_t r_ = (x); if (r_ != NVML_SUCCESS) { printf("FAIL %s:%d %s -> %d (%s)\n", __FILE__, __LINE__, #x, r_, nvmlErrorString(r_)); fails++; } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 0;
  unsigned n = 0;
  EXPECT(nvmlDeviceGetCount_v2(&n) == NVML_ERROR_UNINITIALIZED);
  NV(nvmlInit_v2());
  NV(nvmlDeviceGetCount_v2(&n));
  printf("count=%u\n", n);
  CUdevice cd;
  CUcontext ctx;
  CUdeviceptr p = 0;
  CU(cuInit(0));
  CU(cuDeviceGet(&cd, 0));
  CU(cuDevicePrimaryCtxRetain(&ctx, cd));
  CU(cuCtxSetCurrent(ctx));
  if (mib) CU(cuMemAlloc(&p, mib << 20));
  for (unsigned i = 0; i < n; i++) {
    nvmlDevice_t d;
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE], uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    NV(nvmlDeviceGetHandleByIndex_v2(i, &d));
    NV(nvmlDeviceGetName(d, name, sizeof name));
    NV(nvmlDeviceGetUUID(d, uuid, sizeof uuid));
    /* The same UUID as the driver's. */
    CUuuid cu;
    CUdevice dev;
    CU(cuDeviceGet(&dev, (int)i));
    CU(cuDeviceGetUuid(&cu, dev));
    char want[64];
    const unsigned char* b = (const unsigned char*)cu.bytes;
    snprintf(want, sizeof want, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    EXPECT(strcmp(uuid, want) == 0);
    nvmlDevice_t again;
    NV(nvmlDeviceGetHandleByUUID(uuid, &again));
    EXPECT(again == d);
    nvmlPciInfo_t pci;
    NV(nvmlDeviceGetPciInfo_v3(d, &pci));
    NV(nvmlDeviceGetHandleByPciBusId_v2(pci.busId, &again));
    EXPECT(again == d);
    char cubus[32];
    CU(cuDeviceGetPCIBusId(cubus, sizeof cubus, dev));
    NV(nvmlDeviceGetHandleByPciBusId_v2(cubus, &again));
    EXPECT(again == d);
    nvmlMemory_t m;
    NV(nvmlDeviceGetMemoryInfo(d, &m));
    nvmlMemory_v2_t m2;
    m2.version = nvmlMemory_v2;
    NV(nvmlDeviceGetMemoryInfo_v2(d, &m2));
    EXPECT(m.total == m2.total && m.used == m2.used && m.free + m.used == m.total);
    size_t cfree = 0, ctotal = 0;
    if (i == 0) CU(cuMemGetInfo(&cfree, &ctotal));
    if (i == 0) EXPECT(ctotal == m.total);
    unsigned cnt = 0;
    nvmlReturn_t r = nvmlDeviceGetComputeRunningProcesses_v3(d, &cnt, NULL);
    EXPECT(r == NVML_SUCCESS || r == NVML_ERROR_INSUFFICIENT_SIZE);
    nvmlProcessInfo_t procs[64];
    cnt = 64;
    NV(nvmlDeviceGetComputeRunningProcesses_v3(d, &cnt, procs));
    unsigned long long mine = 0;
    for (unsigned k = 0; k < cnt; k++)
      if (procs[k].pid == (unsigned)getpid()) mine = procs[k].usedGpuMemory;
    nvmlUtilization_t u;
    NV(nvmlDeviceGetUtilizationRates(d, &u));
    int major = 0, minor = 0;
    NV(nvmlDeviceGetCudaComputeCapability(d, &major, &minor));
    printf("dev%u name=%s uuid=%s bus=%s total=%llu used=%llu processes=%u mine=%llu util=%u cc=%d.%d\n", i, name, uuid,
           pci.busId, m.total, m.used, cnt, mine, u.gpu, major, minor);
    if (i == 0) printf("dev0_used=%llu dev0_mine=%llu dev0_processes=%u\n", m.used, mine, cnt);
  }
  char v[80];
  NV(nvmlSystemGetDriverVersion(v, sizeof v));
  int cv = 0;
  NV(nvmlSystemGetCudaDriverVersion_v2(&cv));
  int dv = 0;
  CU(cuDriverGetVersion(&dv));
  EXPECT(cv == dv);
  nvmlDevice_t bogus;
  EXPECT(nvmlDeviceGetHandleByIndex_v2(n, &bogus) == NVML_ERROR_INVALID_ARGUMENT);
  EXPECT(nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000", &bogus) == NVML_ERROR_NOT_FOUND);
  NV(nvmlShutdown());
  EXPECT(nvmlDeviceGetCount_v2(&n) == NVML_ERROR_UNINITIALIZED);
  if (p) CU(cuMemFree(p));
  printf("OK FAILS=%d\n", fails);
  return fails != 0;
}

/* NVML under the shim, as a tenant's program sees it (linked with
 * -lnvidia-ml, or through dlopen + dlsym when argv[2] is "dlopen"): with a
 * memory cap, nvmlDeviceGetMemoryInfo(_v2) report the cap as the total and
 * agree with cuMemGetInfo; the process list shows this process only.
 * argv[1]: MiB to allocate. Prints key=value lines; OK FAILS=0. */
#include <cuda.h>
#include <dlfcn.h>
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails;
#define NV(x) do { nvmlReturn_t r_ = (x); if (r_ != NVML_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

typedef nvmlReturn_t (*init_t)(void);
typedef nvmlReturn_t (*handle_t)(unsigned, nvmlDevice_t*);
typedef nvmlReturn_t (*mem_t)(nvmlDevice_t, nvmlMemory_t*);
typedef nvmlReturn_t (*mem2_t)(nvmlDevice_t, nvmlMemory_v2_t*);
typedef nvmlReturn_t (*procs_t)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*);

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 0;
  int use_dlopen = argc > 2 && strcmp(argv[2], "dlopen") == 0;
  init_t init = nvmlInit_v2;
  handle_t handle = nvmlDeviceGetHandleByIndex_v2;
  mem_t mem = nvmlDeviceGetMemoryInfo;
  mem2_t mem2 = nvmlDeviceGetMemoryInfo_v2;
  procs_t procs = nvmlDeviceGetComputeRunningProcesses_v3;
  if (use_dlopen) {
    void* h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    EXPECT(h != NULL);
    init = (init_t)dlsym(h, "nvmlInit_v2");
    handle = (handle_t)dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    mem = (mem_t)dlsym(h, "nvmlDeviceGetMemoryInfo");
    mem2 = (mem2_t)dlsym(h, "nvmlDeviceGetMemoryInfo_v2");
    procs = (procs_t)dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v3");
  }
  CUdevice dev;
  CUcontext ctx;
  CUdeviceptr p = 0;
  CU(cuInit(0));
  CU(cuDeviceGet(&dev, 0));
  CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CU(cuCtxSetCurrent(ctx));
  if (mib) CU(cuMemAlloc(&p, mib << 20));
  size_t cfree = 0, ctotal = 0;
  CU(cuMemGetInfo(&cfree, &ctotal));
  NV(init());
  nvmlDevice_t d;
  NV(handle(0, &d));
  nvmlMemory_t m;
  NV(mem(d, &m));
  nvmlMemory_v2_t m2;
  m2.version = nvmlMemory_v2;
  NV(mem2(d, &m2));
  printf("nvml_total=%llu nvml_free=%llu nvml_used=%llu cuda_total=%zu cuda_free=%zu\n", m.total, m.free, m.used,
         ctotal, cfree);
  EXPECT(m.total == ctotal && m.free == cfree && m.used == m.total - m.free);
  EXPECT(m2.total == m.total && m2.free == m.free && m2.used + m2.reserved == m.used);
  nvmlProcessInfo_t list[64];
  unsigned n = 64;
  NV(procs(d, &n, list));
  int mine = 0;
  for (unsigned i = 0; i < n; i++) mine += list[i].pid == (unsigned)getpid();
  printf("listed=%u mine=%d\n", n, mine);
  if (p) CU(cuMemFree(p));
  printf("OK FAILS=%d\n", fails);
  return fails != 0;
}

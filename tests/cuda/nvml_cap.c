/* NVML under the shim, as a tenant's program sees it. argv[1]: MiB to
 * allocate on device argv[3] (default 0), whose NVML view is printed.
 * argv[2], how NVML is reached:
 *   linked   the program links -lnvidia-ml (build with -DLINKED);
 *   dlopen   dlopen("libnvidia-ml.so.1", RTLD_LOCAL) + dlsym on the handle,
 *            as PyTorch and nvidia-ml-py do; twice, with nvmlShutdown and
 *            dlclose between (a program may unload NVML and load it again);
 *   default  dlopen as above, then dlsym(RTLD_DEFAULT, ...) for the
 *            queries (another interposer may be preloaded before the shim);
 *   nocuda   dlopen as above, once, and no CUDA call at all (nvidia-smi).
 * With a memory cap, nvmlDeviceGetMemoryInfo(_v2) report the cap as the
 * total and agree with cuMemGetInfo; the process lists (v1, v2, v3) show
 * this process only, or under a broker its tenant's (pids= prints them). Prints key=value lines; OK FAILS=0 at the end. */
#include <cuda.h>
#include <dlfcn.h>
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int fails;
#define NV(x) do { nvmlReturn_t r_ = (x); if (r_ != NVML_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #x, r_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

typedef nvmlReturn_t (*init_t)(void);
typedef nvmlReturn_t (*handle_t)(unsigned, nvmlDevice_t*);
typedef nvmlReturn_t (*mem_t)(nvmlDevice_t, nvmlMemory_t*);
typedef nvmlReturn_t (*mem2_t)(nvmlDevice_t, nvmlMemory_v2_t*);
typedef nvmlReturn_t (*procs1_t)(nvmlDevice_t, unsigned*, nvmlProcessInfo_v1_t*);
typedef nvmlReturn_t (*procs_t)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*);
struct api { init_t init, shutdown; handle_t handle; mem_t mem; mem2_t mem2; procs1_t p1; procs_t p2, p3; };

static void* sym(void* h, const char* n) {
  void* f = dlsym(h, n);
  if (!f) { printf("FAIL no %s\n", n); fails++; }
  return f;
}

static void query(struct api* a, unsigned index, size_t cfree, size_t ctotal, int round) {
  NV(a->init());
  nvmlDevice_t d;
  NV(a->handle(index, &d));
  nvmlMemory_t m;
  NV(a->mem(d, &m));
  nvmlMemory_v2_t m2;
  m2.version = nvmlMemory_v2;
  NV(a->mem2(d, &m2));
  EXPECT(m2.total == m.total && m2.free == m.free && m2.used + m2.reserved == m.used);
  nvmlProcessInfo_t list[64];
  nvmlProcessInfo_v1_t list1[64];
  unsigned n = 64, n1 = 64, n2 = 64, n0 = 0;
  NV(a->p3(d, &n, list));
  NV(a->p2(d, &n2, list));
  NV(a->p1(d, &n1, list1));
  nvmlReturn_t r0 = a->p3(d, &n0, NULL);
  EXPECT((r0 == NVML_SUCCESS && n0 == 0) || (r0 == NVML_ERROR_INSUFFICIENT_SIZE && n0 == n));
  EXPECT(n1 == n && n2 == n);
  int mine = 0;
  printf("pids=");
  for (unsigned i = 0; i < n; i++) {
    mine += list[i].pid == (unsigned)getpid();
    printf("%s%u", i ? "," : "", list[i].pid);
  }
  printf("\n");
  if (round == 0)
    printf("nvml_total=%llu nvml_free=%llu nvml_used=%llu cuda_total=%zu cuda_free=%zu listed=%u mine=%d\n", m.total,
           m.free, m.used, ctotal, cfree, n, mine);
  else
    printf("round%d_total=%llu\n", round, m.total);
  NV(a->shutdown());
}

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 0;
  const char* mode = argc > 2 ? argv[2] : "linked";
  unsigned index = argc > 3 ? (unsigned)atoi(argv[3]) : 0;
  CUdevice dev;
  CUcontext ctx;
  CUdeviceptr p = 0;
  int nocuda = strcmp(mode, "nocuda") == 0;
  size_t cfree = 0, ctotal = 0;
  if (!nocuda) {
    CU(cuInit(0));
    CU(cuDeviceGet(&dev, (int)index));
    CU(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU(cuCtxSetCurrent(ctx));
    if (mib) CU(cuMemAlloc(&p, mib << 20));
    CU(cuMemGetInfo(&cfree, &ctotal));
  }
  struct api a;
#ifdef LINKED
  a.init = nvmlInit_v2; a.shutdown = nvmlShutdown; a.handle = nvmlDeviceGetHandleByIndex_v2;
  a.mem = nvmlDeviceGetMemoryInfo; a.mem2 = nvmlDeviceGetMemoryInfo_v2;
  /* (nvml.h maps the unversioned names to _v3: the older ABIs by name.) */
  a.p1 = (procs1_t)sym(RTLD_DEFAULT, "nvmlDeviceGetComputeRunningProcesses");
  a.p2 = (procs_t)sym(RTLD_DEFAULT, "nvmlDeviceGetComputeRunningProcesses_v2");
  a.p3 = nvmlDeviceGetComputeRunningProcesses_v3;
  (void)mode;
  query(&a, index, cfree, ctotal, 0);
#else
  int rounds = strcmp(mode, "dlopen") == 0 ? 2 : 1;
  for (int round = 0; round < rounds; round++) {
    void* h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    EXPECT(h != NULL);
    void* q = strcmp(mode, "default") == 0 ? RTLD_DEFAULT : h;
    a.init = (init_t)sym(h, "nvmlInit_v2");
    a.shutdown = (init_t)sym(h, "nvmlShutdown");
    a.handle = (handle_t)sym(h, "nvmlDeviceGetHandleByIndex_v2");
    a.mem = (mem_t)sym(q, "nvmlDeviceGetMemoryInfo");
    a.mem2 = (mem2_t)sym(q, "nvmlDeviceGetMemoryInfo_v2");
    a.p1 = (procs1_t)sym(q, "nvmlDeviceGetComputeRunningProcesses");
    a.p2 = (procs_t)sym(q, "nvmlDeviceGetComputeRunningProcesses_v2");
    a.p3 = (procs_t)sym(q, "nvmlDeviceGetComputeRunningProcesses_v3");
    if (!fails) query(&a, index, cfree, ctotal, round);
    dlclose(h);
    /* Take the address range the library had, so that a reload lands elsewhere. */
    for (int i = 0; i < 64; i++) mmap(NULL, 1 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
#endif
  if (p) CU(cuMemFree(p));
  printf("OK FAILS=%d\n", fails);
  return fails != 0;
}

/* Loads libcuda.so.1 the way the runtime does (dlopen + dlsym of
 * cuGetProcAddress_v2) and checks cuGetProcAddress's version and flag
 * semantics, pointer identity with the exports, and the legacy 32-bit
 * cuMemAlloc. */
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int fails = 0;
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

typedef CUresult (*gpa_v2_t)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
typedef CUresult (*gpa_t)(const char*, void**, int, cuuint64_t);
static void* lib;
static gpa_v2_t gpa;

static void* get(const char* name, int ver, cuuint64_t flags, CUresult* r, CUdriverProcAddressQueryResult* st) {
  void* p = (void*)1;
  *r = gpa(name, &p, ver, flags, st);
  return p;
}

/* name@ver with flags resolves to exactly dlsym(lib, sym) */
static void same(const char* name, int ver, cuuint64_t flags, const char* sym) {
  CUresult r; CUdriverProcAddressQueryResult st = 99;
  void* p = get(name, ver, flags, &r, &st);
  void* e = dlsym(lib, sym);
  if (!(r == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS && p && p == e)) {
    printf("FAIL %s@%d flags %llu: got %p (r=%d st=%d), dlsym(%s) = %p\n", name, ver, (unsigned long long)flags, p, r, st, sym, e);
    fails++;
  }
}

int main(void) {
  lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
  gpa = (gpa_v2_t)dlsym(lib, "cuGetProcAddress_v2");
  EXPECT(gpa != NULL);
  if (!gpa) return 1;

  /* versions pick the newest ABI introduced at or before the request */
  same("cuGetProcAddress", 11030, 0, "cuGetProcAddress");
  same("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2");
  same("cuMemAlloc", 2000, 0, "cuMemAlloc");
  same("cuMemAlloc", 3020, 0, "cuMemAlloc_v2");
  same("cuMemAlloc", 13000, 0, "cuMemAlloc_v2");
  same("cuMemFree", 2000, 0, "cuMemFree");
  same("cuMemFree", 12000, 0, "cuMemFree_v2");
  same("cuCtxCreate", 12000, 0, "cuCtxCreate_v3");
  same("cuCtxCreate", 12050, 0, "cuCtxCreate_v4");
  same("cuCtxSynchronize", 12000, 0, "cuCtxSynchronize");
  same("cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2");
  same("cuEventElapsedTime", 12000, 0, "cuEventElapsedTime");
  same("cuEventElapsedTime", 12080, 0, "cuEventElapsedTime_v2");
  same("cuDeviceTotalMem", 12000, 0, "cuDeviceTotalMem_v2");
  same("cuMemGetInfo", 12000, 0, "cuMemGetInfo_v2");
  /* flag 2: per-thread variants where they exist, else the default one */
  same("cuLaunchKernel", 12000, 0, "cuLaunchKernel");
  same("cuLaunchKernel", 12000, 2, "cuLaunchKernel_ptsz");
  same("cuLaunchKernel", 12000, 1, "cuLaunchKernel");
  same("cuLaunchKernelEx", 12000, 2, "cuLaunchKernelEx_ptsz");
  same("cuLaunchCooperativeKernel", 12000, 2, "cuLaunchCooperativeKernel_ptsz");
  same("cuGraphLaunch", 12000, 2, "cuGraphLaunch_ptsz");
  same("cuGraphLaunch", 12000, 0, "cuGraphLaunch");
  same("cuMemcpyHtoD", 12000, 2, "cuMemcpyHtoD_v2_ptds");
  same("cuMemcpy", 12000, 2, "cuMemcpy_ptds");
  same("cuMemcpyAsync", 12000, 2, "cuMemcpyAsync_ptsz");
  same("cuMemAllocAsync", 12000, 2, "cuMemAllocAsync_ptsz");
  same("cuMemAllocFromPoolAsync", 12000, 2, "cuMemAllocFromPoolAsync_ptsz");
  same("cuMemFreeAsync", 12000, 2, "cuMemFreeAsync_ptsz");
  same("cuStreamBeginCapture", 12000, 2, "cuStreamBeginCapture_v2_ptsz");
  same("cuMemAlloc", 12000, 2, "cuMemAlloc_v2");
  same("cuMemAlloc", 12000, 1, "cuMemAlloc_v2");
  {
    CUresult r; CUdriverProcAddressQueryResult st;
    void* a = get("cuLaunchKernel", 12000, 0, &r, &st);
    void* b = get("cuLaunchKernel", 12000, 2, &r, &st);
    EXPECT(a && b && a != b);
  }
  /* the must-hook set exists as distinct exports */
  const char* hooks[] = {"cuInit", "cuGetProcAddress", "cuGetProcAddress_v2", "cuDeviceTotalMem_v2", "cuMemGetInfo_v2", "cuMemAlloc_v2",
    "cuMemAllocPitch_v2", "cuMemAllocManaged", "cuMemAllocAsync", "cuMemAllocAsync_ptsz", "cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync_ptsz",
    "cuMemCreate", "cuArrayCreate_v2", "cuArray3DCreate_v2", "cuMipmappedArrayCreate", "cuMemFree_v2", "cuMemFreeAsync", "cuMemFreeAsync_ptsz",
    "cuMemRelease", "cuArrayDestroy", "cuMipmappedArrayDestroy", "cuLaunchKernel", "cuLaunchKernel_ptsz", "cuLaunchKernelEx", "cuLaunchKernelEx_ptsz",
    "cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", "cuGraphLaunch", "cuGraphLaunch_ptsz", "cuMemAlloc", "cuMemFree"};
  int nh = sizeof hooks / sizeof *hooks;
  for (int i = 0; i < nh; i++) {
    void* p = dlsym(lib, hooks[i]);
    if (!p) { printf("FAIL export %s missing\n", hooks[i]); fails++; }
    for (int j = 0; j < i; j++) if (p && p == dlsym(lib, hooks[j])) { printf("FAIL %s and %s share an address\n", hooks[i], hooks[j]); fails++; }
  }
  /* unknown names, too-old versions, invalid arguments */
  {
    CUresult r; CUdriverProcAddressQueryResult st = 99;
    void* p = get("cuNoSuchFunction", 12000, 0, &r, &st);
    EXPECT(r == CUDA_SUCCESS && p == NULL && st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    st = 99; p = get("cuMemAllocAsync", 11000, 0, &r, &st);
    EXPECT(r == CUDA_SUCCESS && p == NULL && st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    p = get("cuMemAlloc", 99999, 0, &r, &st);
    EXPECT(r == CUDA_ERROR_INVALID_VALUE);
    EXPECT(gpa(NULL, &p, 12000, 0, &st) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(gpa("cuMemAlloc", NULL, 12000, 0, &st) == CUDA_ERROR_INVALID_VALUE);
    gpa_t gpa1 = (gpa_t)dlsym(lib, "cuGetProcAddress");
    p = NULL;
    EXPECT(gpa1 && gpa1("cuMemAlloc", &p, 12000, 0) == CUDA_SUCCESS && p == dlsym(lib, "cuMemAlloc_v2"));
  }
  /* the legacy 32-bit cuMemAlloc: a real allocation below 4 GiB */
  {
    CUresult r; CUdriverProcAddressQueryResult st;
    CUresult (*init)(unsigned) = get("cuInit", 12000, 0, &r, &st);
    CUresult (*retain)(CUcontext*, CUdevice) = get("cuDevicePrimaryCtxRetain", 12000, 0, &r, &st);
    CUresult (*setcur)(CUcontext) = get("cuCtxSetCurrent", 12000, 0, &r, &st);
    CUresult (*alloc32)(unsigned int*, unsigned int) = get("cuMemAlloc", 2000, 0, &r, &st);
    CUresult (*free32)(unsigned int) = get("cuMemFree", 2000, 0, &r, &st);
    CUresult (*info)(size_t*, size_t*) = get("cuMemGetInfo", 12000, 0, &r, &st);
    CUresult (*memcpy_htod)(CUdeviceptr, const void*, size_t) = get("cuMemcpyHtoD", 12000, 0, &r, &st);
    CUresult (*memcpy_dtoh)(void*, CUdeviceptr, size_t) = get("cuMemcpyDtoH", 12000, 0, &r, &st);
    CUcontext ctx; size_t f0, f1, f2, t;
    EXPECT(init(0) == CUDA_SUCCESS && retain(&ctx, 0) == CUDA_SUCCESS && setcur(ctx) == CUDA_SUCCESS);
    EXPECT(info(&f0, &t) == CUDA_SUCCESS);
    unsigned int p32 = 0;
    EXPECT(alloc32(&p32, 1 << 20) == CUDA_SUCCESS && p32 != 0);
    EXPECT(info(&f1, &t) == CUDA_SUCCESS && f0 - f1 == (2u << 20));
    printf("legacy_ptr=0x%x\n", p32);
    int v = 1234, w = 0;
    EXPECT(memcpy_htod((CUdeviceptr)p32, &v, 4) == CUDA_SUCCESS && memcpy_dtoh(&w, (CUdeviceptr)p32, 4) == CUDA_SUCCESS && w == v);
    EXPECT(free32(p32) == CUDA_SUCCESS);
    EXPECT(info(&f2, &t) == CUDA_SUCCESS && f2 == f0);
    EXPECT(info(NULL, &t) == CUDA_ERROR_INVALID_VALUE);
  }
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

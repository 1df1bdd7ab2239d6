/* The way the CUDA runtime reaches the driver, done by hand: dlopen
 * libcuda.so.1, dlsym cuGetProcAddress_v2 on the handle, then versioned
 * lookups with flags 0 and 2. Under the shim every hooked ABI must come back
 * as the shim's wrapper of exactly that ABI, the legacy 32-bit entry as the
 * driver's own, unknown names as the driver says; and the capped
 * allocation must fail with CUDA_ERROR_OUT_OF_MEMORY. argv[1]: cap in MiB.  */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define EXPECT(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); fails++; } } while (0)

typedef CUresult (*gpa_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
static gpa_t gpa;

/* Which library a function pointer lives in. */
static int in_lib(void *p, const char *name) {
  Dl_info info;
  return p && dladdr(p, &info) && info.dli_fname && strstr(info.dli_fname, name);
}

static void *lookup(const char *name, int ver, cuuint64_t flags, CUdriverProcAddressQueryResult *st) {
  void *p = (void *)0x1;
  CUdriverProcAddressQueryResult s = 99;
  CUresult r = gpa(name, &p, ver, flags, &s);
  if (r != CUDA_SUCCESS) { printf("FAIL cuGetProcAddress(%s, %d, %llu) -> %d\n", name, ver, (unsigned long long)flags, r); fails++; }
  if (st) *st = s;
  return p;
}

int main(int argc, char **argv) {
  size_t cap = (size_t)strtoull(argc > 1 ? argv[1] : "64", 0, 10) << 20;
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
  int shim = dlsym(RTLD_DEFAULT, "tslice_abi_version") != NULL;
  printf("shim=%d\n", shim);
  gpa = (gpa_t)dlsym(h, "cuGetProcAddress_v2");
  EXPECT(gpa != NULL);
  /* The handle lookup is answered by the shim's dlsym with its wrapper. */
  if (shim) EXPECT((void *)gpa == dlsym(RTLD_DEFAULT, "cuGetProcAddress_v2"));

  struct { const char *name; int ver; cuuint64_t flags; const char *export_name; } hooked[] = {
    {"cuInit", 2000, 0, "cuInit"},
    {"cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"},
    {"cuGetProcAddress", 11030, 0, "cuGetProcAddress"},
    {"cuMemAlloc", 3020, 0, "cuMemAlloc_v2"},
    {"cuMemAlloc", 3020, 2, "cuMemAlloc_v2"},
    {"cuMemFree", 3020, 0, "cuMemFree_v2"},
    {"cuMemGetInfo", 3020, 0, "cuMemGetInfo_v2"},
    {"cuMemAllocAsync", 11020, 0, "cuMemAllocAsync"},
    {"cuMemAllocAsync", 11020, 2, "cuMemAllocAsync_ptsz"},
    {"cuMemFreeAsync", 11020, 2, "cuMemFreeAsync_ptsz"},
    {"cuMemCreate", 10020, 0, "cuMemCreate"},
    {"cuLaunchKernel", 4000, 0, "cuLaunchKernel"},
    {"cuLaunchKernel", 7000, 2, "cuLaunchKernel_ptsz"},
    {"cuLaunchKernel", 7000, 1, "cuLaunchKernel"},
    {"cuLaunchKernelEx", 11060, 2, "cuLaunchKernelEx_ptsz"},
    {"cuLaunchCooperativeKernel", 9000, 2, "cuLaunchCooperativeKernel_ptsz"},
    {"cuGraphLaunch", 10000, 0, "cuGraphLaunch"},
    {"cuGraphLaunch", 10000, 2, "cuGraphLaunch_ptsz"},
    {"cuDeviceTotalMem", 3020, 0, "cuDeviceTotalMem_v2"},
  };
  for (unsigned i = 0; i < sizeof hooked / sizeof *hooked; i++) {
    CUdriverProcAddressQueryResult st;
    void *p = lookup(hooked[i].name, hooked[i].ver, hooked[i].flags, &st);
    void *want = shim ? dlsym(RTLD_DEFAULT, hooked[i].export_name) : dlsym(h, hooked[i].export_name);
    if (p != want || st != CU_GET_PROC_ADDRESS_SUCCESS) {
      printf("FAIL %s@%d flags %llu: got %p, want %s %p\n", hooked[i].name, hooked[i].ver,
             (unsigned long long)hooked[i].flags, p, hooked[i].export_name, want);
      fails++;
    }
    /* A wrapper in the shim, never the driver's own function. */
    EXPECT(in_lib(p, shim ? "libtslice" : "libcuda"));
  }
  /* Unhooked entry points are the driver's, untouched. */
  EXPECT(lookup("cuMemcpyHtoD", 3020, 0, NULL) == dlsym(h, "cuMemcpyHtoD_v2"));
  EXPECT(lookup("cuCtxSynchronize", 2000, 0, NULL) == dlsym(h, "cuCtxSynchronize"));
  /* The legacy 32-bit cuMemAlloc passes through to the driver. */
  void *legacy = lookup("cuMemAlloc", 2000, 0, NULL);
  EXPECT(legacy == dlsym(h, "cuMemAlloc"));
  EXPECT(legacy != dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
  EXPECT(in_lib(legacy, "libcuda"));
  EXPECT(in_lib(lookup("cuMemcpyHtoD", 3020, 0, NULL), "libcuda"));
  /* Unknown names: success, NULL, SYMBOL_NOT_FOUND, exactly as the driver says. */
  CUdriverProcAddressQueryResult st;
  EXPECT(lookup("cuNoSuchEntryPoint", 12000, 0, &st) == NULL && st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  /* Too old a version for any ABI of the name. */
  EXPECT(lookup("cuMemCreate", 9000, 0, &st) == NULL && st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);

  /* Use the looked-up entry points. */
  CUresult (*init)(unsigned) = lookup("cuInit", 2000, 0, NULL);
  CUresult (*retain)(CUcontext *, CUdevice) = lookup("cuDevicePrimaryCtxRetain", 7000, 0, NULL);
  CUresult (*setcur)(CUcontext) = lookup("cuCtxSetCurrent", 4000, 0, NULL);
  CUresult (*alloc)(CUdeviceptr *, size_t) = lookup("cuMemAlloc", 3020, 0, NULL);
  CUresult (*release)(CUdeviceptr) = lookup("cuMemFree", 3020, 0, NULL);
  CUresult (*info)(size_t *, size_t *) = lookup("cuMemGetInfo", 3020, 0, NULL);
  CUresult (*alloc32)(unsigned *, unsigned) = legacy;
  CUresult (*free32)(unsigned) = lookup("cuMemFree", 2000, 0, NULL);
  CUcontext ctx;
  EXPECT(init(0) == CUDA_SUCCESS);
  EXPECT(retain(&ctx, 0) == CUDA_SUCCESS);
  EXPECT(setcur(ctx) == CUDA_SUCCESS);
  size_t f = 0, t = 0;
  EXPECT(info(&f, &t) == CUDA_SUCCESS);
  EXPECT(info(NULL, &t) == CUDA_ERROR_INVALID_VALUE);
  printf("info_total=%zu info_free=%zu\n", t, f);
  CUdeviceptr d1 = 0, d2 = 0;
  EXPECT(alloc(&d1, cap / 2) == CUDA_SUCCESS);
  CUresult r = alloc(&d2, cap / 2 + (4 << 20));
  printf("over_cap_result=%d\n", r);
  if (shim) EXPECT(r == CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(release(d1) == CUDA_SUCCESS);
  if (r == CUDA_SUCCESS) release(d2);
  /* The legacy entry works as the driver made it: a 32-bit pointer. */
  unsigned p32 = 0;
  EXPECT(alloc32(&p32, 4096) == CUDA_SUCCESS && p32 != 0);
  EXPECT(free32(p32) == CUDA_SUCCESS);
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

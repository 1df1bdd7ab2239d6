/* Races and corner cases of the memory cap that a hostile or merely busy
 * tenant hits (issue 6). Linked against libcuda; driver API only.
 *
 *   hardening destroy CAP_MIB ITERS   a context holding the whole cap is
 *       destroyed (cuCtxDestroy) ITERS times while another thread, in its
 *       own context, keeps asking for the whole cap
 *   hardening reset CAP_MIB ITERS     the same with cuDevicePrimaryCtxReset
 *   hardening storm THREADS CAP_MIB ROUNDS   THREADS threads allocate and
 *       free in one context while it is destroyed under them; afterwards the
 *       shim must believe nothing is in use and the whole cap must fit
 *   hardening forkinit THREADS SPIN   THREADS threads make their first CUDA
 *       calls while the main thread forks; the child must initialise CUDA
 *       (a hung child is killed by an alarm and reported)
 *   hardening twogpu                  stream-ordered allocations charged to
 *       the stream's device and the pool's location (caps 0=8GiB,1=1GiB)
 *   hardening errors                  error classes for invalid arguments
 *   hardening badcreate N             N cuMemCreate calls on device 70 and
 *       N on device -1 (which do not exist): the driver refuses them all,
 *       and the shim's diagnostics about them are rate-limited
 *   hardening xctx                    a stream-ordered allocation on a stream
 *       of context B while A is current: destroying A leaves it charged
 *   hardening xdev                    the same across devices, with a reset
 *   hardening hostwait                a destroy waits for a host function that
 *       waits for a neighbour thread's allocation (no deadlock, no stall)
 *   hardening relrace                 the last primary release races with a
 *       retain in another thread
 *   hardening v1reset                 the CUDA 7.0 ABI of the primary reset
 *       (what the runtime asks for) gives the charges back too
 *   hardening nodriver                the real driver cannot be loaded
 *       (TSLICE_LIBCUDA points nowhere): every call is "not initialized"
 *
 * Prints key=value results and OK FAILS=0 when every expectation held. */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../../include/tslice.h"

static int fails;
#define EXPECT(c) do { if (!(c)) { printf("FAIL[%d] line %d: %s\n", (int)getpid(), __LINE__, #c); fails++; } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL[%d] line %d: %s -> %d\n", (int)getpid(), __LINE__, #x, (int)r_); fails++; } } while (0)
#define MIB ((size_t)1 << 20)

/* The shim's counters for `dev`, or -1 without the shim. */
static long long shim_used(int dev) {
  typedef int (*fn_t)(int, struct tslice_device_stats *);
  fn_t f = (fn_t)dlsym(RTLD_DEFAULT, "tslice_get_device_stats");
  struct tslice_device_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  if (!f || f(dev, &s) != 0) return -1;
  return (long long)s.hbm_used;
}

/* ---- destroy / reset ---------------------------------------------------- */

static volatile int stop;
static CUcontext hammer_ctx;
static size_t hammer_bytes;
static long hammer_ok;

static void *hammer(void *arg) {
  (void)arg;
  CU(cuCtxSetCurrent(hammer_ctx));
  while (!stop) {
    CUdeviceptr p;
    if (cuMemAlloc(&p, hammer_bytes) == CUDA_SUCCESS) {
      hammer_ok++;
      CU(cuMemFree(p));
    }
  }
  return 0;
}

/* Work still queued when the context goes away: the destroy waits for it
 * (as a real driver's does), which is when a neighbour can slip in. */
static void CUDA_CB host_sleep(void *arg) {
  (void)arg;
  usleep(2000);
}

static int destroy_race(int reset, size_t cap, int iters) {
  CUdevice d;
  CU(cuInit(0));
  CU(cuDeviceGet(&d, 0));
  CU(cuCtxCreate(&hammer_ctx, NULL, 0, d));
  hammer_bytes = cap;
  pthread_t t;
  pthread_create(&t, 0, hammer, 0);
  long mine = 0;
  for (int i = 0; i < iters; i++) {
    CUcontext a;
    if (reset) {
      CU(cuDevicePrimaryCtxRetain(&a, d));
      CU(cuCtxSetCurrent(a));
    } else {
      CU(cuCtxCreate(&a, NULL, 0, d));
    }
    CUdeviceptr p;
    long tries = 0;
    while (cuMemAlloc(&p, cap) != CUDA_SUCCESS && ++tries < 10000000) {
    }
    if (tries < 10000000) mine++;
    CU(cuLaunchHostFunc(NULL, host_sleep, NULL));
    if (reset) {
      CU(cuDevicePrimaryCtxReset(d));
    } else {
      CU(cuCtxDestroy(a));
    }
  }
  stop = 1;
  pthread_join(t, 0);
  printf("mine=%ld hammer_ok=%ld\n", mine, hammer_ok);
  EXPECT(mine == iters);
  return 0;
}

/* ---- storm -------------------------------------------------------------- */

static CUcontext storm_ctx;

static void *storm_worker(void *arg) {
  unsigned x = (unsigned)(uintptr_t)arg * 2654435761u + 1;
  CUdeviceptr held[8] = {0};
  cuCtxSetCurrent(storm_ctx);
  while (!stop) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    int i = x % 8;
    if (held[i]) {
      cuMemFree(held[i]); /* fails once the context is gone */
      held[i] = 0;
    } else if (cuMemAlloc(&held[i], (1 + x % 8) * 2 * MIB) != CUDA_SUCCESS) {
      held[i] = 0;
    }
  }
  return 0;
}

static int storm(int threads, size_t cap, int rounds) {
  CUdevice d;
  CU(cuInit(0));
  CU(cuDeviceGet(&d, 0));
  pthread_t t[128];
  for (int r = 0; r < rounds; r++) {
    CU(cuCtxCreate(&storm_ctx, NULL, 0, d));
    stop = 0;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, storm_worker, (void *)(uintptr_t)(i + 1 + r * 131));
    usleep(20000);
    CU(cuCtxDestroy(storm_ctx));
    usleep(20000);
    stop = 1;
    for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
  }
  /* Every allocation lived in a destroyed context: nothing is held. */
  CUcontext c;
  CU(cuCtxCreate(&c, NULL, 0, d));
  long long used = shim_used(0);
  CUdeviceptr p;
  CUresult whole = cuMemAlloc(&p, cap);
  printf("shim_used=%lld whole_cap_alloc=%d\n", used, (int)whole);
  EXPECT(used == 0);
  EXPECT(whole == CUDA_SUCCESS);
  if (whole == CUDA_SUCCESS) CU(cuMemFree(p));
  CU(cuCtxDestroy(c));
  return 0;
}

/* ---- forkinit ----------------------------------------------------------- */

static void *first_calls(void *arg) {
  (void)arg;
  CUdevice d;
  CUcontext c;
  CUdeviceptr p;
  void *fn;
  /* The runtime looks every entry point up before cuInit. */
  cuGetProcAddress("cuMemAlloc", &fn, 12000, 0, NULL);
  if (cuInit(0) == CUDA_SUCCESS && cuDeviceGet(&d, 0) == CUDA_SUCCESS &&
      cuDevicePrimaryCtxRetain(&c, d) == CUDA_SUCCESS && cuCtxSetCurrent(c) == CUDA_SUCCESS &&
      cuMemAlloc(&p, 2 * MIB) == CUDA_SUCCESS)
    cuMemFree(p);
  return 0;
}

static int forkinit(int threads, long spin) {
  pthread_t t[128];
  for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, first_calls, 0);
  for (volatile long k = 0; k < spin; k++) {
  }
  fflush(stdout);
  pid_t c = fork();
  if (c == 0) {
    alarm(15); /* a hang is reported, not waited for forever */
    CUdevice d;
    CUcontext ctx;
    CUdeviceptr p;
    void *fn;
    int ok = cuGetProcAddress("cuMemAlloc", &fn, 12000, 0, NULL) == CUDA_SUCCESS && cuInit(0) == CUDA_SUCCESS && cuDeviceGet(&d, 0) == CUDA_SUCCESS &&
             cuDevicePrimaryCtxRetain(&ctx, d) == CUDA_SUCCESS && cuCtxSetCurrent(ctx) == CUDA_SUCCESS &&
             cuMemAlloc(&p, 2 * MIB) == CUDA_SUCCESS && cuMemFree(p) == CUDA_SUCCESS;
    _exit(ok ? 0 : 3);
  }
  int status = 0;
  waitpid(c, &status, 0);
  for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
  int hung = WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM;
  printf("child_hung=%d child_status=%d\n", hung, WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
  EXPECT(!hung);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return 0;
}

/* ---- twogpu ------------------------------------------------------------- */

static int twogpu(void) {
  CUcontext c0, c1;
  CUstream s0, s1;
  CUdeviceptr p, q;
  CU(cuInit(0));
  CU(cuDevicePrimaryCtxRetain(&c1, 1));
  CU(cuCtxSetCurrent(c1));
  CU(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
  CU(cuDevicePrimaryCtxRetain(&c0, 0));
  CU(cuCtxSetCurrent(c0));
  CU(cuStreamCreate(&s0, CU_STREAM_NON_BLOCKING));

  /* Device 0 is current; the stream lives on device 1 (cap 1 GiB). */
  CUresult big = cuMemAllocAsync(&p, 4096 * MIB, s1);
  printf("async_4g_on_dev1=%d\n", (int)big);
  EXPECT(big == CUDA_ERROR_OUT_OF_MEMORY);
  if (big == CUDA_SUCCESS) CU(cuMemFreeAsync(p, s1));
  CU(cuMemAllocAsync(&p, 768 * MIB, s1));
  printf("dev1_used=%lld dev0_used=%lld\n", shim_used(1), shim_used(0));
  EXPECT(shim_used(1) == (long long)(768 * MIB));
  EXPECT(shim_used(0) == 0);
  EXPECT(cuMemAllocAsync(&q, 512 * MIB, s1) == CUDA_ERROR_OUT_OF_MEMORY);
  CU(cuMemFreeAsync(p, s1));
  CU(cuStreamSynchronize(s1));

  /* A pool located on device 1, used from a device-0 stream. */
  CUmemPoolProps props;
  memset(&props, 0, sizeof props);
  props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  props.location.id = 1;
  CUmemoryPool pool;
  CU(cuMemPoolCreate(&pool, &props));
  CUresult from_pool = cuMemAllocFromPoolAsync(&p, 4096 * MIB, pool, s0);
  printf("pool_4g_on_dev1=%d\n", (int)from_pool);
  EXPECT(from_pool == CUDA_ERROR_OUT_OF_MEMORY);
  if (from_pool == CUDA_SUCCESS) CU(cuMemFreeAsync(p, s0));
  CU(cuMemAllocFromPoolAsync(&p, 512 * MIB, pool, s0));
  EXPECT(shim_used(1) == (long long)(512 * MIB));
  CU(cuMemFreeAsync(p, s0));
  CU(cuStreamSynchronize(s0));

  /* Device 1's default pool, from a device-0 stream. */
  CUmemoryPool dflt;
  CU(cuDeviceGetDefaultMemPool(&dflt, 1));
  CUresult from_default = cuMemAllocFromPoolAsync(&p, 2048 * MIB, dflt, s0);
  printf("default_pool_2g_on_dev1=%d\n", (int)from_default);
  EXPECT(from_default == CUDA_ERROR_OUT_OF_MEMORY);
  if (from_default == CUDA_SUCCESS) CU(cuMemFreeAsync(p, s0));
  CU(cuStreamSynchronize(s0));

  /* CUDA 13's query by location, from a device-0 stream. */
  CUmemLocation loc1;
  loc1.type = CU_MEM_LOCATION_TYPE_DEVICE;
  loc1.id = 1;
  CUmemoryPool by_location;
  CU(cuMemGetDefaultMemPool(&by_location, &loc1, CU_MEM_ALLOCATION_TYPE_PINNED));
  CUresult from_location = cuMemAllocFromPoolAsync(&p, 2048 * MIB, by_location, s0);
  printf("location_pool_2g_on_dev1=%d\n", (int)from_location);
  EXPECT(from_location == CUDA_ERROR_OUT_OF_MEMORY);
  if (from_location == CUDA_SUCCESS) CU(cuMemFreeAsync(p, s0));
  CU(cuStreamSynchronize(s0));

  /* Device 0 keeps its own 8 GiB. */
  EXPECT(shim_used(0) == 0);
  CUresult own = cuMemAlloc(&q, 7 * 1024 * MIB);
  printf("dev0_7g=%d\n", (int)own);
  EXPECT(own == CUDA_SUCCESS);
  if (own == CUDA_SUCCESS) CU(cuMemFree(q));
  CU(cuMemPoolDestroy(pool));
  CU(cuStreamDestroy(s0));
  CU(cuStreamDestroy(s1));
  return 0;
}

/* ---- errors ------------------------------------------------------------- */

static int errors(void) {
  size_t f = 0, t = 0;
  /* No context is current yet: the driver's answer is 201, whatever the pointers. */
  CU(cuInit(0));
  CUresult nocontext = cuMemGetInfo(&f, &t);
  CUresult nocontext_null = cuMemGetInfo(NULL, NULL);
  printf("meminfo_no_context=%d meminfo_no_context_null=%d\n", (int)nocontext, (int)nocontext_null);
  EXPECT(nocontext == CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(nocontext_null == CUDA_ERROR_INVALID_CONTEXT);

  CUcontext c;
  CU(cuDevicePrimaryCtxRetain(&c, 0));
  CU(cuCtxSetCurrent(c));
  CUmemAllocationProp prop;
  memset(&prop, 0, sizeof prop);
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = 0;
  CUmemGenericAllocationHandle h;
  CUresult create_max = cuMemCreate(&h, SIZE_MAX, &prop, 0);
  CUdeviceptr p;
  size_t pitch;
  CUresult pitch_overflow = cuMemAllocPitch(&p, &pitch, (size_t)1 << 40, (size_t)1 << 40, 4);
  CUDA_ARRAY3D_DESCRIPTOR desc;
  memset(&desc, 0, sizeof desc);
  desc.Width = (size_t)1 << 40;
  desc.Height = (size_t)1 << 40;
  desc.Format = CU_AD_FORMAT_FLOAT;
  desc.NumChannels = 4;
  CUmipmappedArray m;
  CUresult mipmap = cuMipmappedArrayCreate(&m, &desc, 4);
  printf("create_size_max=%d pitch_overflow=%d mipmap_absurd=%d\n", (int)create_max, (int)pitch_overflow,
         (int)mipmap);
  EXPECT(create_max == CUDA_ERROR_INVALID_VALUE);
  EXPECT(pitch_overflow == CUDA_ERROR_INVALID_VALUE);
  EXPECT(mipmap == CUDA_ERROR_INVALID_VALUE);
  /* A device that does not exist is the driver's to reject. */
  prop.location.id = -1;
  CUresult bad_dev = cuMemCreate(&h, 2 * MIB, &prop, 0);
  printf("create_device_minus_1=%d\n", (int)bad_dev);
  EXPECT(bad_dev == CUDA_ERROR_INVALID_DEVICE || bad_dev == CUDA_ERROR_INVALID_VALUE);
  CU(cuDevicePrimaryCtxRelease(0));
  return 0;
}

/* ---- badcreate ---------------------------------------------------------- */

static int badcreate(int n) {
  CUcontext c;
  CU(cuInit(0));
  CU(cuDevicePrimaryCtxRetain(&c, 0));
  CU(cuCtxSetCurrent(c));
  CUmemAllocationProp prop;
  memset(&prop, 0, sizeof prop);
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  int refused = 0;
  for (int dev = 70; dev >= -1; dev -= 71) {
    prop.location.id = dev;
    for (int i = 0; i < n; i++) {
      CUmemGenericAllocationHandle h;
      CUresult r = cuMemCreate(&h, 2 * MIB, &prop, 0);
      if (r == CUDA_ERROR_INVALID_DEVICE || r == CUDA_ERROR_INVALID_VALUE) refused++;
    }
  }
  printf("refused=%d\n", refused);
  EXPECT(refused == 2 * n);
  return 0;
}

/* ---- xctx --------------------------------------------------------------- */
static int xctx(void) {
  CUdevice d;
  CUcontext a, b;
  CUstream sb;
  CUdeviceptr p, q;
  CU(cuInit(0));
  CU(cuDeviceGet(&d, 0));
  CU(cuCtxCreate(&b, NULL, 0, d));
  CU(cuStreamCreate(&sb, CU_STREAM_NON_BLOCKING));
  CU(cuCtxCreate(&a, NULL, 0, d)); /* A is current now */
  CU(cuMemAllocAsync(&p, 768 * MIB, sb)); /* lives in B */
  CU(cuStreamSynchronize(sb));
  printf("used_before=%lld\n", shim_used(0));
  CU(cuCtxDestroy(a));                     /* B's memory is untouched */
  printf("used_after_destroy_a=%lld\n", shim_used(0));
  CU(cuCtxSetCurrent(b));
  CUresult second = cuMemAllocAsync(&q, 768 * MIB, sb);
  CU(cuStreamSynchronize(sb));
  printf("second_768=%d\n", (int)second);
  EXPECT(second == CUDA_ERROR_OUT_OF_MEMORY);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- hostwait ----------------------------------------------------------- */
static volatile int flag;
static volatile int host_timed_out;
static CUcontext other;

static void CUDA_CB wait_flag(void *arg) {
  (void)arg;
  double t0 = now_s();
  while (!flag) {
    if (now_s() - t0 > 5.0) { host_timed_out = 1; return; }
    usleep(1000);
  }
}

static void *neighbour(void *arg) {
  (void)arg;
  CUdeviceptr p;
  CU(cuCtxSetCurrent(other));
  usleep(200000); /* the destroy has begun */
  double t0 = now_s();
  CU(cuMemAlloc(&p, 2 * MIB));
  printf("neighbour_alloc_s=%.3f\n", now_s() - t0);
  flag = 1; /* what the host function waits for */
  CU(cuMemFree(p));
  return 0;
}

static int hostwait(void) {
  CUdevice d;
  CUcontext a;
  CUdeviceptr p;
  CU(cuInit(0));
  CU(cuDeviceGet(&d, 0));
  CU(cuCtxCreate(&other, NULL, 0, d));
  CU(cuCtxCreate(&a, NULL, 0, d));
  CU(cuMemAlloc(&p, 2 * MIB));
  CU(cuLaunchHostFunc(NULL, wait_flag, NULL));
  pthread_t t;
  pthread_create(&t, 0, neighbour, 0);
  double t0 = now_s();
  CU(cuCtxDestroy(a));
  printf("destroy_s=%.3f host_timed_out=%d\n", now_s() - t0, host_timed_out);
  pthread_join(t, 0);
  EXPECT(!host_timed_out);
  return 0;
}

/* ---- relrace ------------------------------------------------------------ */
static CUdevice dev0;
static void CUDA_CB host_sleep_200ms(void *arg) { (void)arg; usleep(200000); }
static void *late_retain(void *arg) {
  CUcontext c;
  usleep(100000); /* inside the release's destroy */
  CU(cuDevicePrimaryCtxRetain(&c, dev0));
  *(CUcontext *)arg = c;
  return 0;
}

static int relrace(void) {
  CUcontext c, c2 = 0;
  CUdeviceptr p;
  CU(cuInit(0));
  CU(cuDeviceGet(&dev0, 0));
  CU(cuDevicePrimaryCtxRetain(&c, dev0));
  CU(cuCtxSetCurrent(c));
  CU(cuMemAlloc(&p, 512 * MIB));
  CU(cuLaunchHostFunc(NULL, host_sleep_200ms, NULL));
  pthread_t t;
  pthread_create(&t, 0, late_retain, &c2);
  CU(cuDevicePrimaryCtxRelease(dev0)); /* last release: destroys c */
  pthread_join(t, 0);
  printf("new_ctx_differs=%d\n", c2 != c);
  CU(cuCtxSetCurrent(c2));
  printf("shim_used=%lld\n", shim_used(0));
  CUdeviceptr q;
  CUresult whole = cuMemAlloc(&q, 1024 * MIB);
  printf("whole_cap=%d\n", (int)whole);
  EXPECT(shim_used(0) == (long long)(1024 * MIB) || whole != CUDA_SUCCESS);
  EXPECT(whole == CUDA_SUCCESS);
  return 0;
}

/* ---- v1reset: the 7000 ABI of cuDevicePrimaryCtxReset, as cudart 13 asks for it */
static int v1reset(void) {
  CUcontext c;
  CUdeviceptr p, q;
  CUresult (*reset)(CUdevice) = 0;
  CUdriverProcAddressQueryResult st;
  CU(cuInit(0));
  CU(cuGetProcAddress("cuDevicePrimaryCtxReset", (void **)&reset, 7000, 0, &st));
  CU(cuDevicePrimaryCtxRetain(&c, 0));
  CU(cuCtxSetCurrent(c));
  CU(cuMemAlloc(&p, 768 * MIB));
  CU(reset(0));
  printf("after_reset_shim_used=%lld\n", shim_used(0));
  CU(cuDevicePrimaryCtxRetain(&c, 0));
  CU(cuCtxSetCurrent(c));
  CUresult again = cuMemAlloc(&q, 768 * MIB);
  printf("again=%d\n", (int)again);
  EXPECT(again == CUDA_SUCCESS);
  return 0;
}

/* ---- xdev: the twogpu test's allocation, then device 0 is reset */
static int xdev(void) {
  CUcontext c0, c1;
  CUstream s1;
  CUdeviceptr p, q;
  CU(cuInit(0));
  CU(cuDevicePrimaryCtxRetain(&c1, 1));
  CU(cuCtxSetCurrent(c1));
  CU(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
  CU(cuDevicePrimaryCtxRetain(&c0, 0));
  CU(cuCtxSetCurrent(c0));
  CU(cuMemAllocAsync(&p, 768 * MIB, s1)); /* device 1, context c1 */
  CU(cuStreamSynchronize(s1));
  printf("dev1_used=%lld\n", shim_used(1));
  CU(cuDevicePrimaryCtxReset(0));         /* device 0 */
  printf("dev1_used_after_dev0_reset=%lld\n", shim_used(1));
  CU(cuCtxSetCurrent(c1));
  CUresult again = cuMemAllocAsync(&q, 768 * MIB, s1);
  CU(cuStreamSynchronize(s1));
  printf("again=%d\n", (int)again);
  EXPECT(again == CUDA_ERROR_OUT_OF_MEMORY);
  return 0;
}

/* ---- nodriver ----------------------------------------------------------- */

static int nodriver(void) {
  CUdeviceptr p;
  size_t f, t;
  CUcontext c;
  CUresult init = cuInit(0);
  CUresult alloc = cuMemAlloc(&p, 2 * MIB);
  CUresult info = cuMemGetInfo(&f, &t);
  CUresult retain = cuDevicePrimaryCtxRetain(&c, 0);
  printf("init=%d alloc=%d meminfo=%d retain=%d\n", (int)init, (int)alloc, (int)info, (int)retain);
  EXPECT(init == CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(alloc == CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(info == CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(retain == CUDA_ERROR_NOT_INITIALIZED);
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (!strcmp(mode, "destroy") || !strcmp(mode, "reset")) {
    if (argc < 4) return 2;
    rc = destroy_race(!strcmp(mode, "reset"), (size_t)atoi(argv[2]) * MIB, atoi(argv[3]));
  } else if (!strcmp(mode, "storm")) {
    if (argc < 5) return 2;
    rc = storm(atoi(argv[2]), (size_t)atoi(argv[3]) * MIB, atoi(argv[4]));
  } else if (!strcmp(mode, "forkinit")) {
    if (argc < 4) return 2;
    rc = forkinit(atoi(argv[2]), atol(argv[3]));
  } else if (!strcmp(mode, "twogpu")) {
    rc = twogpu();
  } else if (!strcmp(mode, "errors")) {
    rc = errors();
  } else if (!strcmp(mode, "badcreate")) {
    if (argc < 3) return 2;
    rc = badcreate(atoi(argv[2]));
  } else if (!strcmp(mode, "xctx")) {
    rc = xctx();
  } else if (!strcmp(mode, "xdev")) {
    rc = xdev();
  } else if (!strcmp(mode, "hostwait")) {
    rc = hostwait();
  } else if (!strcmp(mode, "relrace")) {
    rc = relrace();
  } else if (!strcmp(mode, "v1reset")) {
    rc = v1reset();
  } else if (!strcmp(mode, "nodriver")) {
    rc = nodriver();
  } else {
    fprintf(stderr, "usage: hardening destroy|reset|storm|forkinit|twogpu|errors|badcreate|xctx|xdev|hostwait|relrace|v1reset|nodriver ...\n");
    return 2;
  }
  if (rc) return rc;
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

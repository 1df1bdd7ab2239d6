/* Threads racing through the process's first CUDA use, as a framework's
 * worker threads do: each thread dlopen()s libcuda.so.1, looks its entry
 * points up with dlsym, calls cuInit, makes the primary context current and
 * allocates. Nothing CUDA happened in the process before.
 *
 *   firstuse THREADS MIB handle|default|mixed
 *
 * handle:  dlsym on the handle dlopen returned (what the CUDA runtime does);
 * default: dlopen(RTLD_GLOBAL), then dlsym(RTLD_DEFAULT, ...);
 * mixed:   cuInit and the context calls from the handle, the allocation
 *          functions from RTLD_DEFAULT (two libraries of one process that
 *          look the driver up differently).
 * Every thread holds its allocation until all have tried. Prints
 * ok=<successes> oom=<CUDA_ERROR_OUT_OF_MEMORY> other=<any other failure>
 * first_other=<its code>. Not linked against libcuda. */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef CUresult (*init_t)(unsigned);
typedef CUresult (*retain_t)(CUcontext *, CUdevice);
typedef CUresult (*setcur_t)(CUcontext);
typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);

static pthread_barrier_t start_bar, hold_bar;
static int use_default, mixed;
static size_t bytes;
static int results[256];

static void *worker(void *arg) {
  int i = (int)(intptr_t)arg;
  pthread_barrier_wait(&start_bar);
  void *h = dlopen("libcuda.so.1", RTLD_NOW | (use_default || mixed ? RTLD_GLOBAL : RTLD_LOCAL));
  void *src = use_default ? RTLD_DEFAULT : h;
  void *mem_src = use_default || mixed ? RTLD_DEFAULT : h;
  init_t init = h ? (init_t)dlsym(src, "cuInit") : 0;
  retain_t retain = h ? (retain_t)dlsym(src, "cuDevicePrimaryCtxRetain") : 0;
  setcur_t setcur = h ? (setcur_t)dlsym(src, "cuCtxSetCurrent") : 0;
  alloc_t alloc = h ? (alloc_t)dlsym(mem_src, "cuMemAlloc_v2") : 0;
  free_t release = h ? (free_t)dlsym(mem_src, "cuMemFree_v2") : 0;
  CUdeviceptr p = 0;
  CUcontext ctx;
  CUresult r;
  if (!init || !retain || !setcur || !alloc || !release) {
    r = 9000; /* a lookup failed */
  } else if ((r = init(0)) != CUDA_SUCCESS) {
    r += 10000;
  } else if ((r = retain(&ctx, 0)) != CUDA_SUCCESS || (r = setcur(ctx)) != CUDA_SUCCESS) {
    r += 20000;
  } else {
    r = alloc(&p, bytes);
  }
  results[i] = (int)r;
  pthread_barrier_wait(&hold_bar);
  if (r == CUDA_SUCCESS) release(p);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: firstuse THREADS MIB handle|default|mixed\n");
    return 2;
  }
  int n = atoi(argv[1]);
  if (n < 1 || n > 256) return 2;
  bytes = (size_t)strtoull(argv[2], 0, 10) << 20;
  use_default = !strcmp(argv[3], "default");
  mixed = !strcmp(argv[3], "mixed");
  pthread_barrier_init(&start_bar, 0, (unsigned)n);
  pthread_barrier_init(&hold_bar, 0, (unsigned)n);
  pthread_t t[256];
  for (int i = 0; i < n; i++) pthread_create(&t[i], 0, worker, (void *)(intptr_t)i);
  for (int i = 0; i < n; i++) pthread_join(t[i], 0);
  int ok = 0, oom = 0, other = 0, first_other = 0;
  for (int i = 0; i < n; i++) {
    if (results[i] == CUDA_SUCCESS) ok++;
    else if (results[i] == CUDA_ERROR_OUT_OF_MEMORY) oom++;
    else if (other++ == 0) first_other = results[i];
  }
  printf("ok=%d oom=%d other=%d first_other=%d\n", ok, oom, other, first_other);
  return 0;
}

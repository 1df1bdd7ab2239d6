/* fork: the parent initialises CUDA and holds memory; the child initialises
 * CUDA again and gets its own budget under the same cap (the parent's
 * allocations are not the child's). argv[1]: cap in MiB. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails;
#define EXPECT(c) do { if (!(c)) { printf("FAIL pid %d line %d: %s\n", getpid(), __LINE__, #c); fails++; } } while (0)

static void use_cuda(size_t cap, const char *who) {
  CUdevice dev;
  CUcontext ctx;
  EXPECT(cuInit(0) == CUDA_SUCCESS);
  EXPECT(cuDeviceGet(&dev, 0) == CUDA_SUCCESS);
  EXPECT(cuDevicePrimaryCtxRetain(&ctx, dev) == CUDA_SUCCESS);
  EXPECT(cuCtxSetCurrent(ctx) == CUDA_SUCCESS);
  CUdeviceptr a, b;
  EXPECT(cuMemAlloc(&a, cap - (2 << 20)) == CUDA_SUCCESS);
  EXPECT(cuMemAlloc(&b, 4 << 20) == CUDA_ERROR_OUT_OF_MEMORY);
  size_t f, t;
  EXPECT(cuMemGetInfo(&f, &t) == CUDA_SUCCESS);
  printf("%s_free=%zu %s_total=%zu\n", who, f, who, t);
  EXPECT(t == cap && f == (2 << 20));
  fflush(stdout);
}

int main(int argc, char **argv) {
  size_t cap = (size_t)strtoull(argc > 1 ? argv[1] : "64", 0, 10) << 20;
  use_cuda(cap, "parent");
  pid_t pid = fork();
  if (pid == 0) {
    use_cuda(cap, "child");
    printf("child_fails=%d\n", fails);
    fflush(stdout);
    _exit(fails != 0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

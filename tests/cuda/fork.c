/* fork: the child must initialize CUDA again (as with the real driver) and
 * then works with fresh contexts; the parent keeps working. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails = 0;
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("FAIL[%d] %s:%d %s -> %d\n", (int)getpid(), __FILE__, __LINE__, #x, (int)r_); fails++; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL[%d] %s:%d expected %s\n", (int)getpid(), __FILE__, __LINE__, #c); fails++; } } while (0)

static void use_device(size_t bytes) {
  CUcontext ctx; CUdeviceptr d; int v = 99, w = 0;
  CU(cuDevicePrimaryCtxRetain(&ctx, 0)); CU(cuCtxSetCurrent(ctx));
  CU(cuMemAlloc(&d, bytes));
  CU(cuMemcpyHtoD(d, &v, 4)); CU(cuMemcpyDtoH(&w, d, 4)); EXPECT(w == v);
  CU(cuMemFree(d));
}

int main(void) {
  CU(cuInit(0));
  CUcontext pctx; CU(cuDevicePrimaryCtxRetain(&pctx, 0)); CU(cuCtxSetCurrent(pctx));
  CUdeviceptr keep; CU(cuMemAlloc(&keep, 8 << 20));
  fflush(stdout);
  pid_t c = fork();
  if (c == 0) {
    CUdeviceptr x;
    EXPECT(cuMemAlloc(&x, 1 << 20) == CUDA_ERROR_NOT_INITIALIZED);
    CU(cuInit(0));
    EXPECT(cuCtxSetCurrent(pctx) == CUDA_ERROR_INVALID_CONTEXT);
    use_device(4 << 20);
    printf("child %s\n", fails ? "FAILED" : "ok");
    fflush(stdout);
    _exit(fails != 0);
  }
  int status = 0; waitpid(c, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  use_device(2 << 20);
  CU(cuMemFree(keep));
  printf("%sFAILS=%d\n", fails ? "" : "OK ", fails);
  return fails != 0;
}

/* exec ends a program's use of the device: the driver frees its memory (its
 * file descriptors are close-on-exec). Driven over stdin/stdout:
 *   execself before: allocates 64 MiB, prints "held", waits for a line,
 *                    then execs itself as "execself after"
 *   execself after:  prints "execd" (no CUDA call yet), waits for a line,
 *                    allocates 32 MiB, prints "held", waits for a line. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void wait_line(void) {
  char buf[64];
  if (!fgets(buf, sizeof buf, stdin)) _exit(4);
}

static int hold(size_t bytes) {
  CUcontext c;
  CUdeviceptr p;
  if (cuInit(0) || cuDevicePrimaryCtxRetain(&c, 0) || cuCtxSetCurrent(c) || cuMemAlloc(&p, bytes)) {
    printf("FAIL cuda\n");
    return 1;
  }
  printf("held\n");
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "before")) {
    if (hold(64u << 20)) return 1;
    wait_line();
    char *args[] = {argv[0], "after", 0};
    execv(argv[0], args);
    printf("FAIL exec\n");
    return 1;
  }
  printf("execd\n");
  fflush(stdout);
  wait_line();
  if (hold(32u << 20)) return 1;
  wait_line();
  return 0;
}

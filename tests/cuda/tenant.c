/* A tenant process for the broker tests, driven over stdin/stdout.
 *
 *   tenant grab MIB STEP   allocates STEP MiB at a time until MIB are held or
 *                          an allocation is refused; prints
 *                          "held=<bytes> total=<meminfo total> free=<meminfo free>"
 *                          then runs commands from stdin, one per line:
 *                            alloc N   allocate N MiB more; prints "alloc=<result>"
 *                            free      free everything; prints "freed"
 *                            info      prints "total=<t> free=<f> held=<bytes>"
 *                            exit      (or end of input) exits
 *   tenant race THREADS MIB   THREADS threads allocate MIB-MiB pieces until
 *                          refused; prints "held=<bytes>" then waits for a line
 *   tenant forkgrab PARENT_MIB CHILD_MIB   allocates PARENT_MIB, forks; the
 *                          child initialises CUDA again and allocates up to
 *                          CHILD_MIB in 64 MiB steps, prints "child_held=<bytes>",
 *                          exits; then the parent prints "parent_held=<bytes>"
 *
 * Linked against libcuda (driver API). Exit status 0 unless CUDA itself
 * could not be initialised. */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
static CUcontext ctx;
static CUdeviceptr ptrs[65536];
static size_t sizes[65536];
static int nptrs;
static size_t held;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int grab(size_t bytes) {
  CUdeviceptr p;
  CUresult r = cuMemAlloc(&p, bytes);
  if (r == CUDA_SUCCESS) {
    pthread_mutex_lock(&mu);
    if (nptrs < 65536) {
      sizes[nptrs] = bytes;
      ptrs[nptrs++] = p;
    }
    held += bytes;
    pthread_mutex_unlock(&mu);
  }
  return (int)r;
}

static void info(void) {
  size_t f = 0, t = 0;
  CUresult r = cuMemGetInfo(&f, &t);
  printf("total=%zu free=%zu held=%zu info=%d\n", t, f, held, (int)r);
}

static size_t piece;
static void *racer(void *arg) {
  (void)arg;
  cuCtxSetCurrent(ctx);
  while (grab(piece) == CUDA_SUCCESS) {
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: tenant grab MIB STEP | tenant race THREADS MIB\n");
    return 2;
  }
  setvbuf(stdout, 0, _IOLBF, 0);
  CUresult r = cuInit(0);
  if (r != CUDA_SUCCESS || cuDevicePrimaryCtxRetain(&ctx, 0) != CUDA_SUCCESS || cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
    printf("cuda=%d\n", (int)r);
    return 1;
  }
  if (!strcmp(argv[1], "forkgrab")) {
    size_t parent = (size_t)atoi(argv[2]) * MIB, child = (size_t)atoi(argv[3]) * MIB;
    grab(parent);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
      held = 0;
      nptrs = 0;
      if (cuInit(0) || cuDevicePrimaryCtxRetain(&ctx, 0) || cuCtxSetCurrent(ctx)) _exit(3);
      while (held < child && grab(64 * MIB) == CUDA_SUCCESS) {
      }
      printf("child_held=%zu\n", held);
      fflush(stdout);
      _exit(0);
    }
    int st = 0;
    waitpid(c, &st, 0);
    printf("parent_held=%zu child_status=%d\n", held, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
  }
  if (!strcmp(argv[1], "race")) {
    int n = atoi(argv[2]);
    piece = (size_t)atoi(argv[3]) * MIB;
    pthread_t t[64];
    for (int i = 0; i < n && i < 64; i++) pthread_create(&t[i], 0, racer, 0);
    for (int i = 0; i < n && i < 64; i++) pthread_join(t[i], 0);
    printf("held=%zu\n", held);
  } else {
    size_t want = (size_t)atoi(argv[2]) * MIB, step = (size_t)atoi(argv[3]) * MIB;
    while (held < want && grab(step) == CUDA_SUCCESS) {
    }
    size_t f = 0, t = 0;
    cuMemGetInfo(&f, &t);
    printf("held=%zu total=%zu free=%zu\n", held, t, f);
  }
  char line[128];
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "alloc ", 6)) {
      printf("alloc=%d\n", grab((size_t)atoi(line + 6) * MIB));
    } else if (!strncmp(line, "free", 4)) {
      for (int i = 0; i < nptrs; i++) cuMemFree(ptrs[i]);
      nptrs = 0;
      held = 0;
      printf("freed\n");
    } else if (!strncmp(line, "info", 4)) {
      info();
    } else if (!strncmp(line, "exit", 4)) {
      break;
    }
  }
  return 0;
}

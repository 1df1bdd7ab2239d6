/* tslice_get_device_stats before the process's first CUDA call: no cap is
 * in force yet, which the header spells hbm_limit = UINT64_MAX. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "../../include/tslice.h"

int main(void) {
  typedef int (*fn_t)(int, struct tslice_device_stats *);
  fn_t f = (fn_t)dlsym(RTLD_DEFAULT, "tslice_get_device_stats");
  if (!f) {
    printf("FAIL the shim is not loaded\n");
    return 1;
  }
  struct tslice_device_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  int r = f(0, &s);
  printf("rc=%d hbm_limited=%u hbm_limit=%llu hbm_used=%llu\n", r, s.hbm_limited, (unsigned long long)s.hbm_limit,
         (unsigned long long)s.hbm_used);
  return r != 0;
}

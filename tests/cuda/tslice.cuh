// Reads the shim's own counters from inside a tenant (include/tslice.h).
#pragma once
#include <dlfcn.h>
#include "../../include/tslice.h"

// Fills `s` for `dev`; returns false when the shim is not loaded.
static bool tslice_stats(int dev, tslice_device_stats *s) {
  typedef int (*fn_t)(int, tslice_device_stats *);
  fn_t f = (fn_t)dlsym(RTLD_DEFAULT, "tslice_get_device_stats");
  if (!f) return false;
  s->size = sizeof *s;
  return f(dev, s) == 0;
}

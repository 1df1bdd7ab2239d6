/* Another NVML interposer, preloaded before the shim in a test: it forwards
 * nvmlDeviceGetMemoryInfo to the next definition (dlsym(RTLD_NEXT)), as
 * interposers do. Built with -shared -fPIC -ldl. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <nvml.h>

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t* m) {
  nvmlReturn_t (*next)(nvmlDevice_t, nvmlMemory_t*) =
      (nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*))dlsym(RTLD_NEXT, "nvmlDeviceGetMemoryInfo");
  return next ? next(d, m) : NVML_ERROR_FUNCTION_NOT_FOUND;
}

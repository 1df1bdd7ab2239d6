/*
 * tslice: the public C ABI of libtslice.so.
 *
 * libtslice.so is loaded into a tenant process with LD_PRELOAD. It exports
 * the hooked CUDA driver entry points (see shim/src/hooks/table.rs), a
 * dlsym override, and the functions below, which let code running inside the
 * tenant (tests, monitoring agents, a framework's logging) read what tslice
 * enforces. Look them up with dlsym(RTLD_DEFAULT, "tslice_get_device_stats"): they
 * exist only when the shim is loaded.
 *
 * Compatibility: TSLICE_ABI_VERSION changes only on incompatible changes;
 * structs carry their size and only grow at the end.
 */
#ifndef TSLICE_H
#define TSLICE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TSLICE_ABI_VERSION 1

/* The ABI version of the loaded shim (TSLICE_ABI_VERSION it was built with). */
uint32_t tslice_abi_version(void);

/* The shim's version string, e.g. "0.1.0". */
const char *tslice_version(void);

/* What tslice enforces on one device, in this process. */
struct tslice_device_stats {
    uint32_t size;          /* set by the caller: sizeof(struct tslice_device_stats) */
    int32_t device;         /* CUDA ordinal */
    uint32_t hbm_limited;   /* 1 if a memory cap applies (resolved on first allocation) */
    uint32_t reserved0;
    uint64_t hbm_limit;     /* bytes; UINT64_MAX when not capped */
    uint64_t hbm_used;      /* bytes charged now (allocations rounded up to 2 MiB) */
    uint64_t hbm_peak;      /* high-water mark of hbm_used */
    uint64_t hbm_denials;   /* allocations refused with CUDA_ERROR_OUT_OF_MEMORY */
    uint32_t compute_share_ppm; /* share of GPU time in parts per million; 0 when not limited */
    uint32_t reserved1;
    uint64_t launches;           /* launches that passed the gate */
    uint64_t throttled_launches; /* launches that had to wait */
    uint64_t throttle_wait_ns;   /* total time launches waited */
    uint64_t charged_ns;         /* GPU time charged, after measurement corrections */
};

/* Fills *out for `device`. Returns 0, or -1 when `out` is NULL, out->size is
 * too small, or the device is out of range. */
int tslice_get_device_stats(int device, struct tslice_device_stats *out);

/* ---------------------------------------------------------------------------
 * Configuration (environment of the tenant process; read on the first CUDA
 * call; an invalid value makes every CUDA allocation, launch and cuInit fail
 * with CUDA_ERROR_NOT_PERMITTED (800) and prints one line naming the variable,
 * the value and the accepted forms):
 *
 *   TSLICE_HBM_LIMIT      memory cap: 8GiB | 8G | 8192MiB | 8589934592 | 25%
 *                         per device: 0=8GiB,1=25% or GPU-<uuid>=8GiB, with at
 *                         most one bare value for the other devices
 *   TSLICE_COMPUTE_LIMIT  share of GPU time: 30% | 12.5% (0.1%..100%), per
 *                         device as above
 *   TSLICE_COMPUTE_BURST  most GPU time spent at once after idling (2ms)
 *   TSLICE_COMPUTE_INFLIGHT  most estimated work queued on the GPU (2ms)
 *   TSLICE_COMPUTE_QUANTUM   work a throttled process below half of the GPU
 *                            runs per turn (1ms)
 *   TSLICE_GPU_TIMESLICE  the GPU's time-slicing timeslice (1024us, the open
 *                         kernel modules' default); bounds how much of a
 *                         measurement can be another tenant's turn
 *   TSLICE_LOG            off | error | warn (default) | info | debug
 *   TSLICE_LIBCUDA        path of the real driver (default libcuda.so.1)
 * ------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif /* TSLICE_H */

//! Context life cycle. Destroying a context (`cuCtxDestroy`, or the last
//! release or a reset of a device's primary context, as `cudaDeviceReset`
//! does) frees every allocation and event it holds: the shim gives those
//! allocations' charges back and forgets the gate's events of that context
//! (a later context may get the same handle value).
//!
//! Records are dropped *before* a destroy or reset, while the context still
//! exists, so no new context can have taken its handle value yet (a destroy
//! that then fails, of an invalid context, had no records anyway). Whether a
//! release of the primary context was its last is known only after it; its
//! records are dropped right then.

use crate::hooks::real_fn;
use crate::real;
use crate::state::shim;
use cuda_abi::*;

pub unsafe fn primary_retain(ctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxRetain);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(ctx, dev) };
    if r.is_success() && !ctx.is_null() {
        // SAFETY: written by the driver on success.
        shim().remember_primary(dev, unsafe { *ctx });
    }
    r
}

pub unsafe fn primary_reset(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxReset_v2);
    let s = shim();
    if let Some(ctx) = s.primary_of(dev) {
        s.forget_context(ctx);
    }
    // SAFETY: the caller's argument, passed on.
    unsafe { f(dev) }
}

pub unsafe fn primary_release(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxRelease_v2);
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(dev) };
    // The last release destroys the primary context.
    let s = shim();
    if r.is_success() && real::primary_ctx_active(dev) == Some(false) {
        if let Some(ctx) = s.primary_of(dev) {
            s.forget_context(ctx);
        }
    }
    r
}

pub unsafe fn destroy(ctx: CUcontext) -> CUresult {
    let f = real_fn!(cuCtxDestroy_v2);
    if !ctx.is_null() {
        shim().forget_context(ctx);
    }
    // SAFETY: the caller's argument, passed on.
    unsafe { f(ctx) }
}

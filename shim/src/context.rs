//! Context life cycle. Destroying a context (`cuCtxDestroy`, or the last
//! release or a reset of a device's primary context, as `cudaDeviceReset`
//! does) frees every allocation and event it holds: the shim gives those
//! allocations' charges back and forgets the gate's events of that context
//! (a later context may get the same handle value).
//!
//! As with frees, a charge comes back only *after* the driver has freed the
//! memory, and no allocation racing with the destroy is missed: see
//! [`crate::records`] for the protocol. No lock is held across the driver
//! call (which waits for the context's queued work, which may wait for
//! another thread's allocation).
//!
//! Whether a release of a primary context was its last is known only after
//! it: the context is gone if the device's primary context is inactive, or
//! was re-created since (another thread retained it again: its context id
//! changed, or the old handle no longer answers).

use crate::hooks::real_fn;
use crate::real;
use crate::state::{shim, Shim};
use cuda_abi::*;

/// Runs a call that may destroy `ctx`; `destroyed` tells from its result
/// whether it did.
fn destroying(
    s: &Shim,
    ctx: Option<CUcontext>,
    call: impl FnOnce() -> CUresult,
    destroyed: impl FnOnce(CUresult) -> bool,
) -> CUresult {
    let Some(ctx) = ctx.filter(|c| !c.is_null()) else {
        return call();
    };
    let d = s.records.destroy_begin(ctx as usize);
    let r = call();
    let gone = destroyed(r);
    let charges = s.records.destroy_end(d, gone);
    if gone {
        s.context_gone(ctx, charges);
    }
    r
}

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

/// A primary context reset: the context is destroyed if the call succeeds.
fn reset_with(dev: CUdevice, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    destroying(s, s.primary_of(dev), call, |r| r.is_success())
}

pub unsafe fn primary_reset(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxReset_v2);
    // SAFETY: the caller's argument, passed on.
    reset_with(dev, || unsafe { f(dev) })
}

/// The CUDA 7.0 ABI, which the runtime still asks for.
pub unsafe fn primary_reset_v1(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxReset);
    // SAFETY: the caller's argument, passed on.
    reset_with(dev, || unsafe { f(dev) })
}

/// A primary context release: the last one destroys the context.
fn release_with(dev: CUdevice, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    let ctx = s.primary_of(dev);
    let id0 = ctx.and_then(|c| real::ctx_id(c).ok());
    let gone = |r: CUresult| {
        if !r.is_success() {
            return false;
        }
        match (real::primary_ctx_active(dev), ctx, id0) {
            (Some(false), _, _) => true,
            // Active again (or unknown): gone if re-created since.
            (_, Some(c), Some(id0)) => real::ctx_id(c) != Ok(id0),
            _ => false,
        }
    };
    destroying(s, ctx, call, gone)
}

pub unsafe fn primary_release(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxRelease_v2);
    // SAFETY: the caller's argument, passed on.
    release_with(dev, || unsafe { f(dev) })
}

/// The CUDA 7.0 ABI, which the runtime still asks for.
pub unsafe fn primary_release_v1(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxRelease);
    // SAFETY: the caller's argument, passed on.
    release_with(dev, || unsafe { f(dev) })
}

pub unsafe fn destroy(ctx: CUcontext) -> CUresult {
    let f = real_fn!(cuCtxDestroy_v2);
    // SAFETY: the caller's argument, passed on.
    destroying(shim(), Some(ctx), || unsafe { f(ctx) }, |r| r.is_success())
}

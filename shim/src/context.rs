//! Context life cycle. Destroying a context (`cuCtxDestroy`, or the last
//! release or a reset of a device's primary context, as `cudaDeviceReset`
//! does) frees every allocation and event it holds: the shim gives those
//! allocations' charges back and forgets the gate's events of that context
//! (a later context may get the same handle value).
//!
//! As with frees, a charge comes back only *after* the driver has freed the
//! memory: the context's records are taken out before the call (while the
//! context still exists, so no new context can have its handle value yet),
//! their charges are given back if the context is gone afterwards, and the
//! records are put back if it is not (a failed destroy, a release that was
//! not the last). All of it happens under the exclusive side of
//! [`Shim::records_exclusive`], which every allocation and free in the
//! process holds shared from its reservation to its record: an allocation
//! racing with the destroy either completes (and its record is taken out
//! with the others) or starts after it (and the driver refuses it).

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
    let _exclusive = s.records_exclusive();
    let recs = s.take_context_records(ctx);
    let r = call();
    if destroyed(r) {
        s.context_destroyed(ctx, recs);
    } else {
        s.context_kept(recs);
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

pub unsafe fn primary_reset(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxReset_v2);
    let s = shim();
    // SAFETY: the caller's argument, passed on.
    destroying(
        s,
        s.primary_of(dev),
        || unsafe { f(dev) },
        |r| r.is_success(),
    )
}

pub unsafe fn primary_release(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDevicePrimaryCtxRelease_v2);
    let s = shim();
    // The last release destroys the primary context.
    destroying(
        s,
        s.primary_of(dev),
        // SAFETY: the caller's argument, passed on.
        || unsafe { f(dev) },
        |r| r.is_success() && real::primary_ctx_active(dev) == Some(false),
    )
}

pub unsafe fn destroy(ctx: CUcontext) -> CUresult {
    let f = real_fn!(cuCtxDestroy_v2);
    // SAFETY: the caller's argument, passed on.
    destroying(shim(), Some(ctx), || unsafe { f(ctx) }, |r| r.is_success())
}

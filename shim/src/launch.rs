//! Launch paths: kernels (plain, `Ex`, cooperative) and graphs, each in its
//! legacy and per-thread default-stream variant. With a compute share on
//! the current device, each launch passes the gate first ([`crate::gate`]);
//! without one, the cost is one branch.
//!
//! Launches into a stream that is being captured into a graph are not
//! launches (nothing runs): they pass through, and the graph is gated when
//! it is launched.

use crate::gate::{graph_key, kernel_key};
use crate::hooks::real_fn;
use crate::real;
use crate::state::{shim, Shim, FAIL_CLOSED};
use cuda_abi::*;
use std::ffi::{c_uint, c_void};
use tslice_policy::estimate::Kind;

/// Runs `launch` through the gate of the current device, if any.
/// `per_thread`: the entry point was a `_ptsz` one, so a NULL stream is the
/// calling thread's default stream.
#[inline(always)]
fn gated(
    stream: CUstream,
    per_thread: bool,
    kind: Kind,
    key: impl FnOnce() -> u64,
    launch: impl FnOnce() -> CUresult,
) -> CUresult {
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    if !s.compute_on() {
        return launch();
    }
    gated_slow(s, stream, per_thread, kind, key, launch)
}

#[inline(never)]
fn gated_slow(
    s: &Shim,
    stream: CUstream,
    per_thread: bool,
    kind: Kind,
    key: impl FnOnce() -> u64,
    launch: impl FnOnce() -> CUresult,
) -> CUresult {
    let Ok(dev) = s.launch_device() else {
        return launch();
    };
    let Some(gate) = s.gate(dev) else {
        return launch();
    };
    gate.count_launch();
    let stream = if per_thread && stream.is_null() {
        CU_STREAM_PER_THREAD
    } else {
        stream
    };
    if s.captures_active() && real::stream_is_capturing(stream) {
        return launch();
    }
    let t = gate.admit(key(), kind);
    let start = if t.sample {
        gate.record_start(stream)
    } else {
        None
    };
    let r = launch();
    gate.launched(t, r, stream, start);
    r
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shmem: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchKernel);
    gated(
        stream,
        false,
        Kind::Kernel,
        || kernel_key(f, [gx, gy, gz], [bx, by, bz], shmem),
        // SAFETY: the caller's arguments, passed on.
        || unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra) },
    )
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel_ptsz(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shmem: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchKernel_ptsz);
    gated(
        stream,
        true,
        Kind::Kernel,
        || kernel_key(f, [gx, gy, gz], [bx, by, bz], shmem),
        // SAFETY: the caller's arguments, passed on.
        || unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra) },
    )
}

/// The stream and key of a `cuLaunchKernelEx` configuration (None: let the
/// driver reject it).
///
/// # Safety
/// `config` is NULL or points to a valid `CUlaunchConfig`.
unsafe fn ex_parts(config: *const CUlaunchConfig, f: CUfunction) -> Option<(CUstream, u64)> {
    // SAFETY: the caller's contract.
    let c = unsafe { config.as_ref() }?;
    let key = kernel_key(
        f,
        [c.gridDimX, c.gridDimY, c.gridDimZ],
        [c.blockDimX, c.blockDimY, c.blockDimZ],
        c.sharedMemBytes,
    );
    Some((c.hStream, key))
}

pub unsafe fn launch_kernel_ex(
    config: *const CUlaunchConfig,
    f: CUfunction,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchKernelEx);
    // SAFETY: the caller's arguments, passed on.
    let call = || unsafe { real(config, f, params, extra) };
    // SAFETY: the driver API requires `config` to be NULL or valid.
    match unsafe { ex_parts(config, f) } {
        Some((stream, key)) => gated(stream, false, Kind::Kernel, || key, call),
        None => call(),
    }
}

pub unsafe fn launch_kernel_ex_ptsz(
    config: *const CUlaunchConfig,
    f: CUfunction,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchKernelEx_ptsz);
    // SAFETY: the caller's arguments, passed on.
    let call = || unsafe { real(config, f, params, extra) };
    // SAFETY: the driver API requires `config` to be NULL or valid.
    match unsafe { ex_parts(config, f) } {
        Some((stream, key)) => gated(stream, true, Kind::Kernel, || key, call),
        None => call(),
    }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_cooperative(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shmem: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchCooperativeKernel);
    gated(
        stream,
        false,
        Kind::Kernel,
        || kernel_key(f, [gx, gy, gz], [bx, by, bz], shmem),
        // SAFETY: the caller's arguments, passed on.
        || unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params) },
    )
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_cooperative_ptsz(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shmem: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
) -> CUresult {
    let real = real_fn!(cuLaunchCooperativeKernel_ptsz);
    gated(
        stream,
        true,
        Kind::Kernel,
        || kernel_key(f, [gx, gy, gz], [bx, by, bz], shmem),
        // SAFETY: the caller's arguments, passed on.
        || unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params) },
    )
}

pub unsafe fn graph_launch(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let real = real_fn!(cuGraphLaunch);
    // Graph memory is charged before the launch that backs it.
    crate::graphmem::launch(exec, || {
        // SAFETY: the caller's arguments, passed on.
        gated(
            stream,
            false,
            Kind::Graph,
            || graph_key(exec),
            || unsafe { real(exec, stream) },
        )
    })
}

pub unsafe fn graph_launch_ptsz(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let real = real_fn!(cuGraphLaunch_ptsz);
    // Graph memory is charged before the launch that backs it.
    crate::graphmem::launch(exec, || {
        // SAFETY: the caller's arguments, passed on.
        gated(
            stream,
            true,
            Kind::Graph,
            || graph_key(exec),
            || unsafe { real(exec, stream) },
        )
    })
}

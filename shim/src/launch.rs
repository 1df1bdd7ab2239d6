//! Launch paths. Every kernel and graph launch passes through here; the
//! GPU-time gate is applied before the real call.

use crate::hooks::orig;
use crate::state::{shim, FAIL_CLOSED};
use cuda_abi::*;
use std::ffi::{c_uint, c_void};

macro_rules! original {
    ($name:ident) => {
        match orig::$name() {
            Some(f) => f,
            None => return CUresult::ERROR_NOT_FOUND,
        }
    };
}

#[inline(always)]
fn admit() -> Result<(), CUresult> {
    if shim().fail_closed {
        return Err(FAIL_CLOSED);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel(
    f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
    shmem: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchKernel);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra) }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel_ptsz(
    f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
    shmem: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchKernel_ptsz);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra) }
}

pub unsafe fn launch_kernel_ex(
    config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchKernelEx);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(config, f, params, extra) }
}

pub unsafe fn launch_kernel_ex_ptsz(
    config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchKernelEx_ptsz);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(config, f, params, extra) }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_cooperative(
    f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
    shmem: c_uint, stream: CUstream, params: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchCooperativeKernel);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params) }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_cooperative_ptsz(
    f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
    shmem: c_uint, stream: CUstream, params: *mut *mut c_void,
) -> CUresult {
    let real = original!(cuLaunchCooperativeKernel_ptsz);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(f, gx, gy, gz, bx, by, bz, shmem, stream, params) }
}

pub unsafe fn graph_launch(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let real = original!(cuGraphLaunch);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(exec, stream) }
}

pub unsafe fn graph_launch_ptsz(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let real = original!(cuGraphLaunch_ptsz);
    if let Err(e) = admit() {
        return e;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(exec, stream) }
}

//! `cuInit`: the first call most programs make; fails closed when the
//! configuration is invalid.

use crate::hooks::orig;
use crate::state::{shim, FAIL_CLOSED};
use cuda_abi::CUresult;
use std::ffi::c_uint;

pub unsafe fn cu_init(flags: c_uint) -> CUresult {
    if !crate::real::ensure_driver() {
        return CUresult::ERROR_NOT_INITIALIZED;
    }
    let Some(f) = orig::cuInit() else { return CUresult::ERROR_NOT_FOUND };
    if shim().fail_closed {
        return FAIL_CLOSED;
    }
    // SAFETY: the caller's argument, passed on.
    unsafe { f(flags) }
}

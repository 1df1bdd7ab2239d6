//! The FFI boundary: no panic crosses it.

use cuda_abi::CUresult;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a wrapper's body. A panic (a bug in the shim) is caught: this one
/// call returns `CUDA_ERROR_UNKNOWN`, a line is logged, and the shim carries
/// on for later calls.
#[inline(always)]
pub fn guard(name: &'static str, f: impl FnOnce() -> CUresult) -> CUresult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::log::error!("internal error in {name}; this call returns CUDA_ERROR_UNKNOWN");
            CUresult::ERROR_UNKNOWN
        }
    }
}

/// As [`guard`] for functions that do not return a `CUresult`.
pub fn guard_or<T>(name: &'static str, fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        crate::log::error!("internal error in {name}");
        fallback
    })
}

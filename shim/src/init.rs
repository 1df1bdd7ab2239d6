//! `cuInit`: the first call most programs make; fails closed when the
//! configuration is invalid.

use crate::hooks::real_fn;
use crate::state::{shim, FAIL_CLOSED};
use cuda_abi::CUresult;
use std::ffi::c_uint;

pub unsafe fn cu_init(flags: c_uint) -> CUresult {
    let f = real_fn!(cuInit);
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(flags) };
    if r.is_success() {
        s.set_cuda_initialised();
        // The broker, if the node has one (a refused connection fails the
        // process closed, as an invalid configuration does).
        if let Err(e) = s.connect_broker() {
            return e;
        }
        s.check_device_lists();
    }
    r
}

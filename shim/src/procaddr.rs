//! `cuGetProcAddress` and `cuGetProcAddress_v2`: the real driver resolves the
//! symbol for the requested version and flags; the shim then hands back the
//! wrapper of that exact ABI.
//!
//! Routing is by identity first: if the returned pointer is the original of
//! a hooked export (e.g. the driver's `cuLaunchKernel_ptsz` for flag 2), the
//! caller gets that export's wrapper. Only if the driver returned a function
//! it does not export under any hooked name does the ABI version table decide
//! (newest row introduced at or before the requested version, in the asked
//! stream variant), and only for versions this table knows
//! ([`KNOWN_CUDA_VERSION`]), so a future ABI is never given an old wrapper.
//! Legacy ABIs (`cuMemAlloc` at 2000) have no row and pass through untouched,
//! as do unknown names and the driver's status and result codes.

use crate::hooks::{self, real_fn, ORIGINALS};
use crate::log;
use cuda_abi::*;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::Ordering;

/// The newest CUDA version whose ABIs the hook table was written against.
pub const KNOWN_CUDA_VERSION: c_int = 13050;

/// The wrapper to hand out for `p`, returned by the driver for (`symbol`,
/// `version`, `flags`), or None to hand `p` out unchanged.
///
/// # Safety
/// `symbol` must be NUL-terminated.
unsafe fn route(
    symbol: *const c_char,
    p: *mut c_void,
    version: c_int,
    flags: u64,
) -> Option<*mut c_void> {
    if let Some(id) = hooks::find_original(p) {
        return Some(hooks::wrapper(id));
    }
    if version > KNOWN_CUDA_VERSION {
        return None;
    }
    // SAFETY: forwarded from the caller.
    let id = unsafe { hooks::find_by_version(symbol, version, flags) }?;
    // The driver answers with a function it does not export by this name:
    // adopt it as the original if we have none, and wrap it.
    let _ = ORIGINALS[id].compare_exchange(
        std::ptr::null_mut(),
        p,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    log::debug!(
        "cuGetProcAddress({}, {version}, {flags}) returned an unexported function; wrapping it as {}",
        hooks::HOOKS[id].base,
        hooks::HOOKS[id].export
    );
    Some(hooks::wrapper(id))
}

/// # Safety
/// As the driver's `cuGetProcAddress_v2`.
pub unsafe fn get_proc_address_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    let f = real_fn!(cuGetProcAddress_v2);
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { f(symbol, pfn, version, flags, status) };
    // SAFETY: checked non-null; the driver succeeded, so `symbol` is a
    // NUL-terminated name and `*pfn` was written.
    unsafe { rewrite(r, symbol, pfn, version, flags) };
    r
}

/// # Safety
/// As the driver's `cuGetProcAddress` (the 4-argument ABI of 11030).
pub unsafe fn get_proc_address(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) -> CUresult {
    let f = real_fn!(cuGetProcAddress);
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { f(symbol, pfn, version, flags) };
    // SAFETY: as in get_proc_address_v2.
    unsafe { rewrite(r, symbol, pfn, version, flags) };
    r
}

/// # Safety
/// `pfn`, when non-null and `r` is success, points to a pointer the driver wrote.
unsafe fn rewrite(
    r: CUresult,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) {
    if !r.is_success() || symbol.is_null() || pfn.is_null() {
        return;
    }
    // SAFETY: non-null and written by the driver on success.
    let p = unsafe { *pfn };
    if p.is_null() {
        return;
    }
    // SAFETY: `symbol` is NUL-terminated (the driver accepted it).
    if let Some(w) = unsafe { route(symbol, p, version, flags) } {
        // SAFETY: as above.
        unsafe { *pfn = w };
    }
}

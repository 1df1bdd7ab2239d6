//! tslice's own C ABI (`include/tslice.h`): version and per-device counters,
//! for tools and tests that run inside a tenant process.

use crate::state::shim;
use std::ffi::{c_char, c_int};

/// Version of the C ABI in `include/tslice.h`.
pub const ABI_VERSION: u32 = 1;

#[no_mangle]
pub extern "C" fn tslice_abi_version() -> u32 {
    ABI_VERSION
}

#[no_mangle]
pub extern "C" fn tslice_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Mirrors `struct tslice_device_stats` in `include/tslice.h`.
#[repr(C)]
pub struct DeviceStats {
    pub size: u32,
    pub device: i32,
    pub hbm_limited: u32,
    pub reserved0: u32,
    pub hbm_limit: u64,
    pub hbm_used: u64,
    pub hbm_peak: u64,
    pub hbm_denials: u64,
    pub compute_share_ppm: u32,
    pub reserved1: u32,
    pub launches: u64,
    pub throttled_launches: u64,
    pub throttle_wait_ns: u64,
    pub charged_ns: u64,
}

/// Fills `out` (whose `size` the caller sets to `sizeof(struct tslice_device_stats)`)
/// with the counters of `device`. Returns 0, or -1 for a bad argument.
///
/// # Safety
/// `out` must be NULL or point to writable memory of `out->size` bytes.
#[no_mangle]
pub unsafe extern "C" fn tslice_get_device_stats(device: c_int, out: *mut DeviceStats) -> c_int {
    crate::ffi::guard_or("tslice_get_device_stats", -1, || {
        if out.is_null() {
            return -1;
        }
        // SAFETY: non-null, and the caller's struct starts with its size
        // field; only that field is read before the size is checked.
        let size = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() };
        if (size as usize) < std::mem::size_of::<DeviceStats>() {
            return -1;
        }
        // SAFETY: the caller's struct is at least as large as ours (checked).
        let Some(o) = (unsafe { out.as_mut() }) else {
            return -1;
        };
        let s = shim();
        let Some(d) = usize::try_from(device).ok().and_then(|i| s.devices.get(i)) else {
            return -1;
        };
        o.device = device;
        o.hbm_limited = d.is_limited() as u32;
        o.reserved0 = 0;
        o.hbm_limit = if d.is_limited() {
            s.mem_limit_shown(d)
        } else {
            u64::MAX
        };
        o.hbm_used = d.ledger.used();
        o.hbm_peak = d.ledger.peak();
        o.hbm_denials = d.ledger.denials();
        let g = s.gate_if_built(device as usize).map(|g| g.stats());
        o.compute_share_ppm = g.as_ref().map_or(0, |g| g.share_ppm);
        o.reserved1 = 0;
        o.launches = g.as_ref().map_or(0, |g| g.gate.launches);
        o.throttled_launches = g.as_ref().map_or(0, |g| g.throttled);
        o.throttle_wait_ns = g.as_ref().map_or(0, |g| g.waited_ns);
        o.charged_ns = g.as_ref().map_or(0, |g| g.gate.charged_ns);
        0
    })
}

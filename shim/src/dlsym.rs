//! The `dlsym` override.
//!
//! The CUDA runtime `dlopen`s `libcuda.so.1` and looks `cuGetProcAddress_v2`
//! up *on that handle*; a handle lookup never sees a preloaded library, so
//! exporting the wrappers is not enough. `dlsym` itself is overridden:
//! lookups of hooked names whose result is the real driver's function get
//! the shim's wrapper instead.
//!
//! `dlsym` is a naked trampoline. It asks [`route`] whether to answer; if
//! not, it restores the arguments and *tail-jumps* to glibc's `dlsym`, so
//! glibc sees the original caller's return address. That keeps
//! `dlsym(RTLD_NEXT, …)` (and the caller-scoped `RTLD_DEFAULT` search)
//! meaning "next after the caller", which a plain call from the shim would
//! break for every other interposer in the process.
//!
//! NVML's hooked names (`nvml…`) are routed the same way, whatever handle
//! they are looked up on (tools `dlopen` `libnvidia-ml.so.1` privately).
//!
//! The fast path (any name not starting with `cu` or `nv`: every lookup
//! Rust's std, libloading, Python and the loader make) reads two bytes and
//! one atomic, and neither allocates, locks nor can panic.

use crate::hooks;
use crate::real::{self, REAL_DLSYM};
use std::ffi::{c_char, c_void};

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the dlsym trampoline is written for x86_64 only; port dlsym.rs to this architecture"
);

/// The exported `dlsym` (not exported from the unit-test runner, whose own
/// lookups must reach glibc untouched).
///
/// # Safety
/// As glibc's `dlsym`.
#[unsafe(naked)]
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void {
    // Entry: rsp = 8 mod 16. Two pushes and 24 bytes keep the call aligned
    // and leave [rsp] as the out-slot for route's answer.
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 24",
        "mov rdx, rsp",
        "call {route}",
        "mov rcx, qword ptr [rsp]",
        "add rsp, 24",
        "pop rsi",
        "pop rdi",
        "test al, al",
        "jz 2f",
        "mov rax, rcx",
        "ret",
        "2:",
        "jmp qword ptr [rip + {real}]",
        route = sym route,
        real = sym REAL_DLSYM,
    )
}

/// Decides a `dlsym` call. Returns true with the answer in `*out`, or false
/// to let glibc's `dlsym` answer (then `REAL_DLSYM` is set).
extern "C" fn route(handle: *mut c_void, name: *const c_char, out: *mut *mut c_void) -> bool {
    if !real::ensure_real_dlsym() {
        // No glibc dlsym to forward to: answer "not found" rather than jump to null.
        // SAFETY: `out` points into the trampoline's stack frame.
        unsafe { *out = std::ptr::null_mut() };
        return true;
    }
    if name.is_null() || handle == libc::RTLD_NEXT {
        return false;
    }
    // SAFETY: dlsym's contract: `name` is NUL-terminated; the second byte is
    // read only when the first is not the terminator.
    let (c0, c1) = unsafe { (*name, if *name == 0 { 0 } else { *name.add(1) }) };
    let is_cu = c0 == b'c' as c_char && c1 == b'u' as c_char;
    let is_nv = c0 == b'n' as c_char && c1 == b'v' as c_char;
    // NVML: lookups on a library's handle (RTLD_DEFAULT's global search
    // already finds the shim's export, or an interposer before it).
    if is_nv && !handle.is_null() {
        return crate::ffi::guard_or("dlsym", false, || {
            // SAFETY: NUL-terminated per dlsym's contract.
            let Some(id) = (unsafe { hooks::find_nvml(name) }) else {
                return false;
            };
            // SAFETY: NUL-terminated per dlsym's contract.
            let found = unsafe { real::real_dlsym(handle, name) };
            let answer = crate::nvml::route(id, found);
            // SAFETY: `out` points into the trampoline's stack frame.
            unsafe { *out = answer };
            true
        });
    }
    if !is_cu {
        return false;
    }
    crate::ffi::guard_or("dlsym", false, || {
        // SAFETY: NUL-terminated per dlsym's contract.
        let Some(id) = (unsafe { hooks::find_export(name) }) else {
            return false;
        };
        if !real::ensure_driver() {
            return false;
        }
        // SAFETY: NUL-terminated per dlsym's contract.
        let found = unsafe { real::real_dlsym(handle, name) };
        let answer = if !found.is_null() && found == hooks::original(id) {
            hooks::wrapper(id)
        } else {
            found
        };
        // SAFETY: `out` points into the trampoline's stack frame.
        unsafe { *out = answer };
        true
    })
}

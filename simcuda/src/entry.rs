//! The FFI edge: every exported entry point runs its body through [`run`],
//! which catches panics (a panic never crosses `extern "C"`; it becomes
//! `CUDA_ERROR_UNKNOWN`) and traces the call under `SIMCUDA_LOG=1`. The
//! pointer helpers here are the only places that dereference caller memory.

use cuda_abi::CUresult;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub type Res<T = ()> = Result<T, CUresult>;

pub const INVALID_VALUE: CUresult = CUresult::ERROR_INVALID_VALUE;
pub const INVALID_HANDLE: CUresult = CUresult::ERROR_INVALID_HANDLE;

/// Runs an entry point's body: panics become `CUDA_ERROR_UNKNOWN`.
pub fn run(name: &'static str, body: impl FnOnce() -> Res) -> CUresult {
    let r = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUresult::SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => CUresult::ERROR_UNKNOWN,
    };
    if crate::config::log_enabled() {
        crate::config::log(format_args!("{name} -> {r}"));
    }
    r
}

/// Defines an exported entry point whose body returns [`Res`].
macro_rules! export {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> cuda_abi::CUresult {
            $crate::entry::run(stringify!($name), move || -> $crate::entry::Res { $body })
        }
    };
}

/// Defines a stream-ordered entry point twice: the legacy-default-stream
/// export and its per-thread (`_ptsz`/`_ptds`) twin, which maps the NULL
/// stream to the calling thread's per-thread stream. The body sees which one
/// it is as `$ds: DefaultStream`.
macro_rules! export_pt {
    ($(#[$m:meta])* fn $name:ident / $pt:ident($($a:ident: $t:ty),* $(,)?) |$ds:ident| $body:block) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> cuda_abi::CUresult {
            let $ds = $crate::stream::DefaultStream::Legacy;
            $crate::entry::run(stringify!($name), move || -> $crate::entry::Res { $body })
        }
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $pt($($a: $t),*) -> cuda_abi::CUresult {
            let $ds = $crate::stream::DefaultStream::PerThread;
            $crate::entry::run(stringify!($pt), move || -> $crate::entry::Res { $body })
        }
    };
}

/// Writes an output parameter; NULL is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `p` is NULL or valid for a write of `T` (the C caller's promise).
pub unsafe fn out<T>(p: *mut T, v: T) -> Res {
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-NULL and, per the API contract, points to writable storage for a T.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Writes an optional output parameter (NULL means "not wanted").
///
/// # Safety
/// As [`out`].
pub unsafe fn out_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and, per the API contract, points to writable storage for a T.
        unsafe { p.write_unaligned(v) };
    }
}

/// Reads an input parameter by value; NULL is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `p` is NULL or valid for a read of `T`.
pub unsafe fn read<T: Copy>(p: *const T) -> Res<T> {
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-NULL and, per the API contract, points to an initialized T.
    Ok(unsafe { p.read_unaligned() })
}

/// Borrows a NUL-terminated string argument.
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string that outlives the call.
pub unsafe fn cstr<'a>(p: *const c_char) -> Res<&'a str> {
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-NULL and NUL-terminated per the API contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| INVALID_VALUE)
}

/// Borrows an array argument of `n` elements (`n == 0` allows NULL).
///
/// # Safety
/// `p` is valid for reads of `n` elements when `n > 0`.
pub unsafe fn slice<'a, T>(p: *const T, n: usize) -> Res<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-NULL and, per the API contract, points to n initialized elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Writes `v` into a caller buffer of `len` bytes as a NUL-terminated string
/// (truncated to fit).
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
pub unsafe fn write_cstr(buf: *mut c_char, len: i32, v: &str) -> Res {
    if buf.is_null() || len <= 0 {
        return Err(INVALID_VALUE);
    }
    let n = v.len().min(len as usize - 1);
    // SAFETY: buf holds len > n bytes per the API contract; source and destination do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

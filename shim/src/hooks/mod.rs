//! The hooked entry points, generated from `table.rs`.
//!
//! For every row the macro produces:
//! * an exported `extern "C"` wrapper under the row's name, which runs the
//!   implementing function inside [`crate::ffi::guard`] (no panic crosses FFI);
//! * a slot in [`ORIGINALS`] for the real driver's function of the same name,
//!   and a typed accessor `orig::<name>()`;
//! * an entry in [`HOOKS`] (names, ABI version, stream variant), used by the
//!   `dlsym` and `cuGetProcAddress` routing.

use std::cmp::Ordering as CmpOrdering;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

/// What the routing needs to know about one hooked entry point.
#[derive(Debug)]
pub struct Hook {
    /// The exported (versioned) name, e.g. `cuMemAlloc_v2`.
    pub export: &'static str,
    /// The same, NUL-terminated, for `dlsym`.
    pub export_c: &'static str,
    /// The base name `cuGetProcAddress` is asked for, e.g. `cuMemAlloc`.
    pub base: &'static str,
    /// The CUDA version that introduced this ABI (`PFN_cuMemAlloc_v3020`).
    pub since: i32,
    /// The per-thread default stream (`_ptsz`/`_ptds`) variant.
    pub per_thread: bool,
}

/// The real driver's function of a hook, resolving the driver first (an
/// atomic load once it is). Returns from the calling wrapper with
/// `CUDA_ERROR_NOT_INITIALIZED` when the driver cannot be loaded (what a
/// driver says before a successful `cuInit`), or `CUDA_ERROR_NOT_FOUND` when
/// it lacks this entry point.
macro_rules! real_fn {
    ($name:ident) => {{
        if !$crate::real::ensure_driver() {
            return cuda_abi::CUresult::ERROR_NOT_INITIALIZED;
        }
        match $crate::hooks::orig::$name() {
            Some(f) => f,
            None => return cuda_abi::CUresult::ERROR_NOT_FOUND,
        }
    }};
}
pub(crate) use real_fn;

macro_rules! hook_table {
    ($(
        $name:ident
            fn($($arg:ident : $ty:ty),* $(,)?) = $imp:path;
    )*) => {
        /// Index of each hooked entry point in [`HOOKS`] and [`ORIGINALS`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Id { $($name),* }

        /// The table, in the order it is written.
        pub const HOOK_LIST: &[Hook] = &[$(
            Hook {
                export: stringify!($name),
                export_c: concat!(stringify!($name), "\0"),
                base: cuda_abi::abi::expect_export(stringify!($name)).0.base,
                since: cuda_abi::abi::expect_export(stringify!($name)).0.since,
                per_thread: cuda_abi::abi::expect_export(stringify!($name)).1,
            }
        ),*];

        /// Addresses of the exported wrappers, in table order.
        static WRAPPERS: [FnAddr; COUNT] = [$(FnAddr($name as *const c_void)),*];

        /// Typed accessors for the real driver's functions.
        #[allow(non_snake_case, dead_code)]
        pub mod orig {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use std::ffi::{c_char, c_int, c_uint, c_void};
            $(
                #[inline(always)]
                pub fn $name() -> Option<unsafe extern "C" fn($($ty),*) -> CUresult> {
                    let p = ORIGINALS[Id::$name as usize].load(Ordering::Acquire);
                    if p.is_null() {
                        None
                    } else {
                        // SAFETY: the slot only ever holds the real driver's
                        // function exported under this exact (versioned) name,
                        // or the pointer its cuGetProcAddress returned for this
                        // exact ABI; either has this row's signature.
                        Some(unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> CUresult>(p)
                        })
                    }
                }
            )*
        }

        $(
            #[no_mangle]
            #[allow(non_snake_case)]
            /// Hooked driver entry point; see the table.
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
                crate::ffi::guard(stringify!($name), || {
                    // SAFETY: the caller upholds the driver API's contract for
                    // these arguments; the implementation only passes them on
                    // to the real driver or reads them as that contract allows.
                    unsafe { $imp($($arg),*) }
                })
            }
        )*
    };
}

/// NVML's rows: exported wrappers returning `nvmlReturn_t` (a panic is
/// `NVML_ERROR_UNKNOWN`), originals resolved by name from NVML.
macro_rules! nvml_table {
    ($(
        $name:ident
            fn($($arg:ident : $ty:ty),* $(,)?) = $imp:path;
    )*) => {
        /// Index of each NVML hook in [`NVML_LIST`] and [`NVML_ORIGINALS`].
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum NvmlId { $($name),* }

        /// The NVML rows' names, NUL-terminated, in table order.
        pub const NVML_LIST: &[&str] = &[$(concat!(stringify!($name), "\0")),*];

        /// NVML's own functions, once known (null until then).
        pub static NVML_ORIGINALS: [AtomicPtr<c_void>; NVML_LIST.len()] =
            [const { AtomicPtr::new(std::ptr::null_mut()) }; NVML_LIST.len()];

        static NVML_WRAPPERS: [FnAddr; NVML_LIST.len()] = [$(FnAddr($name as *const c_void)),*];

        /// Typed accessors for NVML's own functions.
        #[allow(non_snake_case, dead_code)]
        pub mod nvml_orig {
            #[allow(unused_imports)]
            use super::*;
            $(
                pub fn $name() -> Option<unsafe extern "C" fn($($ty),*) -> c_uint> {
                    let p = crate::nvml::original(NvmlId::$name as usize);
                    if p.is_null() {
                        None
                    } else {
                        // SAFETY: the slot holds NVML's function exported
                        // under this row's name, which has this signature.
                        Some(unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> c_uint>(p)
                        })
                    }
                }
            )*
        }

        $(
            #[no_mangle]
            #[allow(non_snake_case)]
            /// Hooked NVML entry point; see the table.
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_uint {
                crate::ffi::guard_or(stringify!($name), crate::nvml::ERROR_UNKNOWN, || {
                    // SAFETY: the caller upholds NVML's contract for these
                    // arguments; the implementation passes them on to NVML
                    // and adjusts only what NVML wrote.
                    unsafe { $imp($($arg),*) }
                })
            }
        )*
    };
}

/// An `nvmlDevice_t`.
pub type NvmlDevice = *mut c_void;

use cuda_abi::*;
use std::ffi::{c_int, c_uint};

include!("table.rs");

/// The NVML hook exported under `name`, if any.
///
/// # Safety
/// `name` must point to a NUL-terminated string.
pub unsafe fn find_nvml(name: *const c_char) -> Option<usize> {
    NVML_LIST.iter().position(|n| {
        // SAFETY: forwarded from the caller.
        let o = unsafe { cmp_cstr(name, &n[..n.len() - 1]) };
        o == CmpOrdering::Equal
    })
}

/// The exported wrapper of an NVML hook.
pub fn nvml_wrapper(id: usize) -> *mut c_void {
    NVML_WRAPPERS[id].0 as *mut c_void
}

/// Number of hooked entry points.
pub const COUNT: usize = HOOK_LIST.len();
pub static HOOKS: &[Hook] = HOOK_LIST;

/// A function address in a `static` table.
struct FnAddr(*const c_void);
// SAFETY: a code address is immutable and valid for the library's lifetime.
unsafe impl Sync for FnAddr {}

/// The real driver's function for each hook (null until resolved, or when the
/// driver lacks it).
pub static ORIGINALS: [AtomicPtr<c_void>; COUNT] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; COUNT];

/// The exported wrapper of a hook.
pub fn wrapper(id: usize) -> *mut c_void {
    WRAPPERS[id].0 as *mut c_void
}

#[cfg_attr(test, allow(dead_code))] // used by dlsym, absent from unit tests
pub fn original(id: usize) -> *mut c_void {
    ORIGINALS[id].load(Ordering::Acquire)
}

const fn str_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Indices of [`HOOK_LIST`] sorted by exported name, computed at compile time.
const fn sorted_by_export() -> [u8; COUNT] {
    let mut idx = [0u8; COUNT];
    let mut i = 0;
    while i < COUNT {
        idx[i] = i as u8;
        i += 1;
    }
    // Insertion sort (const fn).
    let mut i = 1;
    while i < COUNT {
        let mut j = i;
        while j > 0
            && str_less(
                HOOK_LIST[idx[j] as usize].export,
                HOOK_LIST[idx[j - 1] as usize].export,
            )
        {
            let t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    idx
}
static BY_EXPORT: [u8; COUNT] = sorted_by_export();
const _: () = assert!(COUNT < 256);

/// Compares a NUL-terminated C string with `s`, reading no further than the
/// first difference. Does not allocate.
///
/// # Safety
/// `c` must point to a NUL-terminated string.
unsafe fn cmp_cstr(c: *const c_char, s: &str) -> CmpOrdering {
    let s = s.as_bytes();
    let mut i = 0;
    loop {
        // SAFETY: the caller guarantees a NUL-terminated string, and we stop
        // at its NUL (or earlier).
        let a = unsafe { *c.add(i) } as u8;
        let b = if i < s.len() { s[i] } else { 0 };
        if a != b || a == 0 {
            return a.cmp(&b);
        }
        i += 1;
    }
}

/// The hook exported under `name`, if any. Binary search; no allocation, no lock.
///
/// # Safety
/// `name` must point to a NUL-terminated string.
pub unsafe fn find_export(name: *const c_char) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, COUNT);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let id = BY_EXPORT[mid] as usize;
        // SAFETY: forwarded from the caller.
        match unsafe { cmp_cstr(name, HOOK_LIST[id].export) } {
            CmpOrdering::Equal => return Some(id),
            CmpOrdering::Less => hi = mid,
            CmpOrdering::Greater => lo = mid + 1,
        }
    }
    None
}

/// The hook whose original is exactly `p`, if any.
pub fn find_original(p: *mut c_void) -> Option<usize> {
    if p.is_null() {
        return None;
    }
    (0..COUNT).find(|&i| ORIGINALS[i].load(Ordering::Acquire) == p)
}

/// The hook that `cuGetProcAddress(base, version, flags)` means, by the ABI
/// version table: among the rows for `base` introduced at or before
/// `version`, the newest per-thread row when `flags` asks for per-thread
/// entry points (falling back to the legacy row, as the driver does), else
/// the newest legacy row. None for names not hooked and for ABIs older than
/// every row (the legacy 32-bit entry points), which must pass through.
///
/// # Safety
/// `base` must point to a NUL-terminated string.
pub unsafe fn find_by_version(base: *const c_char, version: i32, flags: u64) -> Option<usize> {
    let want_pt = flags & cuda_abi::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM != 0
        && flags & cuda_abi::CU_GET_PROC_ADDRESS_LEGACY_STREAM == 0;
    let pick = |per_thread: bool| {
        HOOK_LIST
            .iter()
            .enumerate()
            // SAFETY: forwarded from the caller.
            .filter(|(_, h)| {
                h.per_thread == per_thread
                    && h.since <= version
                    && unsafe { cmp_cstr(base, h.base) } == CmpOrdering::Equal
            })
            .max_by_key(|(_, h)| h.since)
            .map(|(i, _)| i)
    };
    if want_pt {
        pick(true).or_else(|| pick(false))
    } else {
        pick(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_abi::{
        CU_GET_PROC_ADDRESS_LEGACY_STREAM, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
    };
    use std::ffi::CString;

    fn export(name: &str) -> Option<&'static str> {
        let c = CString::new(name).unwrap();
        // SAFETY: a NUL-terminated string.
        unsafe { find_export(c.as_ptr()) }.map(|i| HOOK_LIST[i].export)
    }

    fn by_version(base: &str, version: i32, flags: u64) -> Option<&'static str> {
        let c = CString::new(base).unwrap();
        // SAFETY: a NUL-terminated string.
        unsafe { find_by_version(c.as_ptr(), version, flags) }.map(|i| HOOK_LIST[i].export)
    }

    #[test]
    fn every_row_is_found_by_its_export_name_and_nothing_else_is() {
        for h in HOOK_LIST {
            assert_eq!(export(h.export), Some(h.export));
            assert_eq!(&h.export_c[..h.export_c.len() - 1], h.export);
        }
        for name in [
            "",
            "c",
            "cu",
            "cuMemAlloc",
            "cuMemAlloc_v2x",
            "cuMemAlloc_v",
            "cuMemAllocPitch",
            "dlsym",
            "cuInit_",
        ] {
            assert_eq!(export(name), None, "{name:?}");
        }
        assert!(BY_EXPORT.windows(2).all(|w| str_less(
            HOOK_LIST[w[0] as usize].export,
            HOOK_LIST[w[1] as usize].export
        )));
    }

    #[test]
    fn versioned_lookups_pick_the_newest_row_at_or_before_the_version() {
        assert_eq!(by_version("cuMemAlloc", 3020, 0), Some("cuMemAlloc_v2"));
        assert_eq!(by_version("cuMemAlloc", 13050, 0), Some("cuMemAlloc_v2"));
        assert_eq!(
            by_version("cuMemAlloc", 2000, 0),
            None,
            "the legacy 32-bit ABI passes through"
        );
        assert_eq!(
            by_version("cuGetProcAddress", 11030, 0),
            Some("cuGetProcAddress")
        );
        assert_eq!(
            by_version("cuGetProcAddress", 12000, 0),
            Some("cuGetProcAddress_v2")
        );
        assert_eq!(
            by_version("cuStreamBeginCapture", 10000, 0),
            Some("cuStreamBeginCapture")
        );
        assert_eq!(
            by_version("cuStreamBeginCapture", 12000, 0),
            Some("cuStreamBeginCapture_v2")
        );
        assert_eq!(by_version("cuNotHooked", 12000, 0), None);
    }

    #[test]
    fn per_thread_flags_pick_the_per_thread_row_or_fall_back_to_legacy() {
        let pt = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
        assert_eq!(
            by_version("cuLaunchKernel", 12000, pt),
            Some("cuLaunchKernel_ptsz")
        );
        assert_eq!(
            by_version("cuLaunchKernel", 12000, 0),
            Some("cuLaunchKernel")
        );
        assert_eq!(
            by_version(
                "cuLaunchKernel",
                12000,
                pt | CU_GET_PROC_ADDRESS_LEGACY_STREAM
            ),
            Some("cuLaunchKernel")
        );
        assert_eq!(
            by_version("cuLaunchKernel", 3000, pt),
            None,
            "older than every row"
        );
        // No per-thread variant: the legacy row, as the driver answers.
        assert_eq!(by_version("cuMemAlloc", 12000, pt), Some("cuMemAlloc_v2"));
        assert_eq!(
            by_version("cuStreamBeginCapture", 12000, pt),
            Some("cuStreamBeginCapture_v2_ptsz")
        );
    }
}

//! The real functions behind the shim: glibc's `dlsym`, the real driver's
//! handle, the originals of every hook, and a few unhooked driver functions
//! the shim calls itself.
//!
//! Everything is resolved through the real `dlsym` on the handle of
//! `libcuda.so.1` (a handle lookup searches only that library's dependency
//! tree, never the preloaded shim), so the shim can never mistake its own
//! export for the real function; a resolved pointer equal to one of our own
//! wrappers is discarded all the same.

use crate::hooks::{self, ORIGINALS};
use crate::log;
use cuda_abi::*;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

/// glibc's `dlsym`. Read by the `dlsym` trampoline, which jumps through it.
pub static REAL_DLSYM: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Resolves glibc's `dlsym` (once; later calls are a load). Returns false if
/// it cannot be found, which no glibc allows.
#[inline]
pub fn ensure_real_dlsym() -> bool {
    if !REAL_DLSYM.load(Ordering::Acquire).is_null() {
        return true;
    }
    for ver in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
        // SAFETY: dlvsym with RTLD_NEXT and static NUL-terminated strings;
        // RTLD_NEXT starts after this library, so it can only find libc's
        // (or a later interposer's) dlsym, never ours.
        let p = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), ver.as_ptr()) };
        if !p.is_null() {
            REAL_DLSYM.store(p, Ordering::Release);
            return true;
        }
    }
    false
}

/// Calls the real `dlsym`.
pub fn real_dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    if !ensure_real_dlsym() {
        return std::ptr::null_mut();
    }
    let p = REAL_DLSYM.load(Ordering::Acquire);
    // SAFETY: p is glibc's dlsym (resolved above), whose signature is DlsymFn.
    let f: DlsymFn = unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(p) };
    // SAFETY: dlsym accepts any handle and a NUL-terminated name (callers pass one).
    unsafe { f(handle, name) }
}

const UNINIT: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static DRIVER_STATE: AtomicU8 = AtomicU8::new(UNINIT);
static DRIVER: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    static RESOLVING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Makes sure the real driver is loaded and every original resolved. Returns
/// false if the driver cannot be loaded, or when called re-entrantly from
/// inside the resolution itself (the driver's constructors looking symbols
/// up through our `dlsym`), in which case the caller passes the call through.
pub fn ensure_driver() -> bool {
    match DRIVER_STATE.load(Ordering::Acquire) {
        READY => return true,
        FAILED => return false,
        _ => {}
    }
    if RESOLVING_HERE.with(|r| r.get()) {
        return false;
    }
    loop {
        match DRIVER_STATE.compare_exchange(UNINIT, RESOLVING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                RESOLVING_HERE.with(|r| r.set(true));
                let ok = resolve_driver();
                RESOLVING_HERE.with(|r| r.set(false));
                DRIVER_STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
                return ok;
            }
            Err(READY) => return true,
            Err(FAILED) => return false,
            // Another thread is resolving (a few dozen dlsym calls): wait.
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn resolve_driver() -> bool {
    if !ensure_real_dlsym() {
        log::error!("glibc's dlsym cannot be found; tslice passes every call through");
        return false;
    }
    let path = std::env::var_os("TSLICE_LIBCUDA");
    let cpath = match &path {
        Some(p) => match std::ffi::CString::new(p.as_encoded_bytes()) {
            Ok(c) => c,
            Err(_) => {
                log::error!("TSLICE_LIBCUDA contains a NUL byte; accepted: a path to libcuda.so.1");
                return false;
            }
        },
        None => c"libcuda.so.1".to_owned(),
    };
    // SAFETY: a NUL-terminated path; RTLD_LAZY|RTLD_LOCAL loads or re-opens it.
    let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a thread-local message or NULL.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: non-null dlerror results are NUL-terminated.
            unsafe { std::ffi::CStr::from_ptr(e) }.to_string_lossy().into_owned()
        };
        log::error!("cannot load the CUDA driver {:?}: {msg}", cpath);
        return false;
    }
    DRIVER.store(h, Ordering::Release);
    for (i, hook) in hooks::HOOKS.iter().enumerate() {
        let p = real_dlsym(h, hook.export_c.as_ptr().cast());
        if p == hooks::wrapper(i) {
            log::error!("{} in {:?} resolves to tslice itself; not hooking it", hook.export, cpath);
            continue;
        }
        if p.is_null() {
            log::debug!("the driver does not export {}", hook.export);
        }
        ORIGINALS[i].store(p, Ordering::Release);
    }
    for (i, spec) in HELPER_SPECS.iter().enumerate() {
        HELPERS[i].store(resolve_helper(spec, h), Ordering::Release);
    }
    true
}

/// Unhooked driver functions the shim calls itself.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Helper {
    CtxGetDevice,
    DeviceGetUuid,
    DeviceGetCount,
}

/// How to find a helper: through the driver's own `cuGetProcAddress_v2`
/// (base name and ABI version, the canonical way), else by exported name.
struct HelperSpec {
    base: &'static std::ffi::CStr,
    version: c_int,
    export: &'static std::ffi::CStr,
}
const HELPER_SPECS: [HelperSpec; 3] = [
    HelperSpec { base: c"cuCtxGetDevice", version: 2000, export: c"cuCtxGetDevice" },
    HelperSpec { base: c"cuDeviceGetUuid", version: 11040, export: c"cuDeviceGetUuid_v2" },
    HelperSpec { base: c"cuDeviceGetCount", version: 2000, export: c"cuDeviceGetCount" },
];
static HELPERS: [AtomicPtr<c_void>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];

fn resolve_helper(h: &HelperSpec, driver: *mut c_void) -> *mut c_void {
    if let Some(gpa) = hooks::orig::cuGetProcAddress_v2() {
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut status: CUdriverProcAddressQueryResult = 0;
        // SAFETY: the real cuGetProcAddress_v2 with a static name and valid out-pointers.
        let r = unsafe { gpa(h.base.as_ptr(), &mut p, h.version, CU_GET_PROC_ADDRESS_DEFAULT, &mut status) };
        if r.is_success() && !p.is_null() {
            return p;
        }
    }
    real_dlsym(driver, h.export.as_ptr())
}

fn helper(h: Helper) -> *mut c_void {
    HELPERS[h as usize].load(Ordering::Acquire)
}

/// The device of the calling thread's current context.
pub fn current_device() -> Result<CUdevice, CUresult> {
    let p = helper(Helper::CtxGetDevice);
    if p.is_null() {
        return Err(CUresult::ERROR_NOT_FOUND);
    }
    // SAFETY: resolved from the driver as cuCtxGetDevice(CUdevice*).
    let f = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut CUdevice) -> CUresult>(p) };
    let mut dev: CUdevice = -1;
    // SAFETY: a valid out-pointer.
    let r = unsafe { f(&mut dev) };
    if r.is_success() {
        Ok(dev)
    } else {
        Err(r)
    }
}

/// The UUID of a device as `nvidia-smi -L` prints it.
pub fn device_uuid(dev: CUdevice) -> Result<String, CUresult> {
    let p = helper(Helper::DeviceGetUuid);
    if p.is_null() {
        return Err(CUresult::ERROR_NOT_FOUND);
    }
    // SAFETY: resolved as cuDeviceGetUuid(_v2)(CUuuid*, CUdevice); both share this ABI.
    let f = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut CUuuid, CUdevice) -> CUresult>(p) };
    let mut u = CUuuid::default();
    // SAFETY: a valid out-pointer.
    let r = unsafe { f(&mut u, dev) };
    if r.is_success() {
        Ok(u.to_gpu_string())
    } else {
        Err(r)
    }
}

/// The real total memory of a device.
pub fn device_total_mem(dev: CUdevice) -> Result<u64, CUresult> {
    let f = hooks::orig::cuDeviceTotalMem_v2().ok_or(CUresult::ERROR_NOT_FOUND)?;
    let mut bytes = 0usize;
    // SAFETY: a valid out-pointer.
    let r = unsafe { f(&mut bytes, dev) };
    if r.is_success() {
        Ok(bytes as u64)
    } else {
        Err(r)
    }
}

#[allow(dead_code)]
pub fn device_count() -> Result<c_int, CUresult> {
    let p = helper(Helper::DeviceGetCount);
    if p.is_null() {
        return Err(CUresult::ERROR_NOT_FOUND);
    }
    // SAFETY: resolved as cuDeviceGetCount(int*).
    let f = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_int) -> CUresult>(p) };
    let mut n = 0;
    // SAFETY: a valid out-pointer.
    let r = unsafe { f(&mut n) };
    if r.is_success() {
        Ok(n)
    } else {
        Err(r)
    }
}

//! NVML as a tenant sees it, consistent with the driver API: on a device
//! whose memory is capped, `nvmlDeviceGetMemoryInfo(_v2)` reports the cap as
//! the total and what the tenant has left as free (as `cuMemGetInfo`
//! does), and the running-process lists show this process only (the others
//! on the GPU are other tenants'). A process that has not initialised CUDA
//! (no caps known yet), or whose memory is not capped, sees NVML unchanged.
//!
//! NVML's own functions come from `libnvidia-ml.so.1`: the ones the program
//! looked up (through the `dlsym` routing), else the next definition after
//! this library (a program linked with `-lnvidia-ml`), else the loaded
//! library's (`dlopen` with `RTLD_NOLOAD`: never loads it).

use crate::hooks::{self, nvml_orig, NvmlDevice, NVML_LIST, NVML_ORIGINALS};
use crate::real;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::sync::atomic::Ordering;

pub const SUCCESS: c_uint = 0;
pub const ERROR_INSUFFICIENT_SIZE: c_uint = 7;
pub const ERROR_FUNCTION_NOT_FOUND: c_uint = 13;
pub const ERROR_UNKNOWN: c_uint = 999;

/// `nvmlMemory_t`.
#[repr(C)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    pub version: c_uint,
    pub total: u64,
    pub reserved: u64,
    pub free: u64,
    pub used: u64,
}

/// `nvmlProcessInfo_v1_t`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ProcessV1 {
    pub pid: c_uint,
    pub used: u64,
}

/// `nvmlProcessInfo_t` (v2; what `_v2` and `_v3` fill).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ProcessV2 {
    pub pid: c_uint,
    pub used: u64,
    pub gpu_instance: c_uint,
    pub compute_instance: c_uint,
}

/// NVML's function of this name: looked up once, then cached when it is a
/// hook's original.
fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: NUL-terminated names; RTLD_NEXT from this library's code is
    // "after the shim"; dlopen with RTLD_NOLOAD only finds a loaded library.
    unsafe {
        let next = real::real_dlsym(libc::RTLD_NEXT, name.as_ptr());
        if !next.is_null() {
            return next;
        }
        let h = libc::dlopen(
            c"libnvidia-ml.so.1".as_ptr(),
            libc::RTLD_LAZY | libc::RTLD_NOLOAD,
        );
        if h.is_null() {
            return std::ptr::null_mut();
        }
        let f = real::real_dlsym(h, name.as_ptr());
        libc::dlclose(h);
        f
    }
}

/// A hook's original (resolving it on first use).
pub fn original(id: usize) -> *mut c_void {
    let p = NVML_ORIGINALS[id].load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    let Ok(name) = CStr::from_bytes_with_nul(NVML_LIST[id].as_bytes()) else {
        return std::ptr::null_mut();
    };
    let f = lookup(name);
    if !f.is_null() && f != hooks::nvml_wrapper(id) {
        let _ = NVML_ORIGINALS[id].compare_exchange(
            std::ptr::null_mut(),
            f,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    NVML_ORIGINALS[id].load(Ordering::Acquire)
}

/// Records what the program's own lookup of a hooked name found (the
/// `dlsym` routing), so that the wrapper calls exactly that.
pub fn remember(id: usize, found: *mut c_void) {
    if !found.is_null() && found != hooks::nvml_wrapper(id) {
        let _ = NVML_ORIGINALS[id].compare_exchange(
            std::ptr::null_mut(),
            found,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// The cap and what is left of it, for the CUDA device that is this NVML
/// device: None when nothing is capped or CUDA is not initialised.
fn capped(device: NvmlDevice) -> Option<(u64, u64)> {
    let s = crate::state::try_shim()?;
    if !s.mem_on() {
        return None;
    }
    let uuid_fn = lookup(c"nvmlDeviceGetUUID");
    if uuid_fn.is_null() {
        return None;
    }
    // SAFETY: NVML's nvmlDeviceGetUUID(device, char*, unsigned).
    let uuid_fn: unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_uint =
        unsafe { std::mem::transmute(uuid_fn) };
    let mut buf = [0 as c_char; 96];
    // SAFETY: a buffer of its stated length.
    if unsafe { uuid_fn(device, buf.as_mut_ptr(), buf.len() as c_uint) } != SUCCESS {
        return None;
    }
    // SAFETY: NVML wrote a NUL-terminated string into the buffer.
    let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().ok()?;
    let n = real::device_count().ok()?;
    let dev = (0..n).find(|&i| real::device_uuid(i).is_ok_and(|u| u.eq_ignore_ascii_case(uuid)))?;
    let d = s.mem_device(dev).ok()??;
    Some((s.mem_limit_shown(d), s.mem_available(d)))
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetMemoryInfo`.
pub unsafe fn memory_info(device: NvmlDevice, memory: *mut Memory) -> c_uint {
    let Some(f) = nvml_orig::nvmlDeviceGetMemoryInfo() else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(device, memory) };
    if r != SUCCESS || memory.is_null() {
        return r;
    }
    if let Some((cap, left)) = capped(device) {
        // SAFETY: NVML filled the caller's structure.
        let m = unsafe { &mut *memory };
        m.total = m.total.min(cap);
        m.free = m.free.min(left).min(m.total);
        m.used = m.total - m.free;
    }
    r
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetMemoryInfo_v2`.
pub unsafe fn memory_info_v2(device: NvmlDevice, memory: *mut MemoryV2) -> c_uint {
    let Some(f) = nvml_orig::nvmlDeviceGetMemoryInfo_v2() else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(device, memory) };
    if r != SUCCESS || memory.is_null() {
        return r;
    }
    if let Some((cap, left)) = capped(device) {
        // SAFETY: NVML filled the caller's structure.
        let m = unsafe { &mut *memory };
        m.total = m.total.min(cap);
        m.free = m.free.min(left).min(m.total);
        m.reserved = m.reserved.min(m.total - m.free);
        m.used = m.total - m.free - m.reserved;
    }
    r
}

/// This process's entries of a device's process list, in NVML's protocol
/// (`count` in: the caller's capacity; out: how many there are).
///
/// # Safety
/// NVML's contract: `count` valid, `infos` holding `*count` elements.
unsafe fn own_processes<T: Copy + Default>(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut T,
    f: unsafe extern "C" fn(NvmlDevice, *mut c_uint, *mut T) -> c_uint,
    pid_of: impl Fn(&T) -> c_uint,
) -> c_uint {
    if crate::state::try_shim().is_none_or(|s| !s.mem_on()) || count.is_null() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(device, count, infos) };
    }
    let mut all: Vec<T> = Vec::new();
    let mut n: c_uint = 64;
    loop {
        all.resize(n as usize, T::default());
        let mut got = n;
        // SAFETY: a buffer of `got` elements.
        let r = unsafe { f(device, &mut got, all.as_mut_ptr()) };
        if r == ERROR_INSUFFICIENT_SIZE && got > n && got <= 1 << 16 {
            n = got;
            continue;
        }
        if r != SUCCESS {
            return r;
        }
        all.truncate(got as usize);
        break;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as c_uint;
    let mine: Vec<T> = all.into_iter().filter(|p| pid_of(p) == me).collect();
    // SAFETY: `count` is valid (checked non-NULL).
    let cap = unsafe { *count } as usize;
    // SAFETY: as above.
    unsafe { *count = mine.len() as c_uint };
    if cap < mine.len() {
        return ERROR_INSUFFICIENT_SIZE;
    }
    if !mine.is_empty() && infos.is_null() {
        return 2; // NVML_ERROR_INVALID_ARGUMENT
    }
    for (i, p) in mine.iter().enumerate() {
        // SAFETY: i < the caller's capacity.
        unsafe { infos.add(i).write(*p) };
    }
    SUCCESS
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses`.
pub unsafe fn processes_v1(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV1,
) -> c_uint {
    let Some(f) = nvml_orig::nvmlDeviceGetComputeRunningProcesses() else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // SAFETY: forwarded.
    unsafe { own_processes(device, count, infos, f, |p| p.pid) }
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses_v2`.
pub unsafe fn processes_v2(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> c_uint {
    let Some(f) = nvml_orig::nvmlDeviceGetComputeRunningProcesses_v2() else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // SAFETY: forwarded.
    unsafe { own_processes(device, count, infos, f, |p| p.pid) }
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses_v3`.
pub unsafe fn processes_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> c_uint {
    let Some(f) = nvml_orig::nvmlDeviceGetComputeRunningProcesses_v3() else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // SAFETY: forwarded.
    unsafe { own_processes(device, count, infos, f, |p| p.pid) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_nvmls() {
        assert_eq!(std::mem::size_of::<Memory>(), 24);
        assert_eq!(std::mem::size_of::<MemoryV2>(), 40);
        assert_eq!(std::mem::size_of::<ProcessV1>(), 16);
        assert_eq!(std::mem::size_of::<ProcessV2>(), 24);
    }
}

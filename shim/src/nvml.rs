//! NVML as a tenant sees it, consistent with the driver API: on a device
//! whose memory is capped, `nvmlDeviceGetMemoryInfo(_v2)` reports the cap as
//! the total and what the tenant has left as free (as `cuMemGetInfo`
//! does), and the running-process lists show this process only, or under a
//! broker its tenant's processes (the others on the GPU are other
//! tenants'). A process that has not initialised CUDA asks the node's
//! broker for its tenant's view ([`tenant_view`]); without a broker, or on
//! a device without a cap and without a broker, NVML is shown unchanged.
//!
//! NVML's own functions come from `libnvidia-ml.so.1`: the ones the program
//! looked up (through the `dlsym` routing), else the next definition after
//! this library (a program linked with `-lnvidia-ml`), else the loaded
//! library's (`dlopen` with `RTLD_NOLOAD`: never loads it).

use crate::hooks::{self, nvml_orig, NvmlDevice, NVML_LIST, NVML_ORIGINALS};
use crate::real;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

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

/// Whether `addr` is in an NVML library (`libnvidia-ml.so*`), which is then
/// pinned (`RTLD_NODELETE`): an address the shim keeps must never outlive
/// its library (a program may `dlclose` NVML and load it again).
fn in_nvml(addr: *mut c_void) -> bool {
    // SAFETY: Dl_info is plain pointers and integers; all zeroes is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr with an address and a valid out-structure.
    if addr.is_null() || unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: a NUL-terminated path owned by the loader.
    let file = unsafe { CStr::from_ptr(info.dli_fname) };
    let base = file
        .to_bytes()
        .rsplit(|b| *b == b'/')
        .next()
        .unwrap_or_default();
    if !base.starts_with(b"libnvidia-ml.so") {
        return false;
    }
    // SAFETY: dlopen of a loaded library by its own path, without loading
    // anything: only its reference count and NODELETE flag change.
    unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
    true
}

/// NVML's function of this name, for a hook whose program has not looked
/// it up through `dlsym`: the next definition after this library (NVML
/// linked by the program, or another interposer before it), else the
/// loaded NVML's (`RTLD_NOLOAD`: never loads it).
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

/// A hook's original (resolving it on first use; kept only when it is
/// NVML's own, pinned).
pub fn original(id: usize) -> *mut c_void {
    let p = NVML_ORIGINALS[id].load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    let Ok(name) = CStr::from_bytes_with_nul(NVML_LIST[id].as_bytes()) else {
        return std::ptr::null_mut();
    };
    let f = lookup(name);
    if f.is_null() || f == hooks::nvml_wrapper(id) {
        return std::ptr::null_mut();
    }
    if in_nvml(f) {
        let _ = NVML_ORIGINALS[id].compare_exchange(
            std::ptr::null_mut(),
            f,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        return NVML_ORIGINALS[id].load(Ordering::Acquire);
    }
    // Another interposer's: called, not kept.
    f
}

/// What a program's lookup of a hooked name on a library handle should
/// get: the wrapper when the lookup found NVML's function (the first NVML
/// the process uses; kept, pinned), else what it found, unchanged (another
/// library's symbol of that name, or a second copy of NVML).
pub fn route(id: usize, found: *mut c_void) -> *mut c_void {
    if found.is_null() || found == hooks::nvml_wrapper(id) {
        return found;
    }
    let kept = NVML_ORIGINALS[id].load(Ordering::Acquire);
    if kept == found {
        return hooks::nvml_wrapper(id);
    }
    if kept.is_null() && in_nvml(found) {
        let won = NVML_ORIGINALS[id]
            .compare_exchange(
                std::ptr::null_mut(),
                found,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if won || NVML_ORIGINALS[id].load(Ordering::Acquire) == found {
            return hooks::nvml_wrapper(id);
        }
    }
    found
}

/// `nvmlDeviceGetUUID`, once found.
static UUID_FN: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// An NVML function the hooks need for themselves, kept once it is NVML's.
fn own_use(slot: &AtomicPtr<c_void>, name: &CStr) -> *mut c_void {
    let f = slot.load(Ordering::Acquire);
    if !f.is_null() {
        return f;
    }
    let f = lookup(name);
    if in_nvml(f) {
        slot.store(f, Ordering::Release);
    }
    f
}

/// The 16 bytes of an NVML UUID string (`GPU-…` or `MIG-…`, dashes anywhere).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s
        .split_once('-')?
        .1
        .bytes()
        .filter(|b| *b != b'-')
        .collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?, 16).ok()?;
    }
    Some(out)
}

/// An NVML device's UUID, as bytes.
fn nvml_uuid(device: NvmlDevice) -> Option<[u8; 16]> {
    let f = own_use(&UUID_FN, c"nvmlDeviceGetUUID");
    if f.is_null() {
        return None;
    }
    // SAFETY: NVML's nvmlDeviceGetUUID(device, char*, unsigned).
    let uuid_fn: unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_uint =
        unsafe { std::mem::transmute(f) };
    let mut buf = [0 as c_char; 96];
    // SAFETY: a buffer of its stated length.
    if unsafe { uuid_fn(device, buf.as_mut_ptr(), buf.len() as c_uint) } != SUCCESS {
        return None;
    }
    // SAFETY: NVML wrote a NUL-terminated string into the buffer.
    uuid_bytes(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().ok()?)
}

/// The CUDA ordinal of an NVML device (by UUID), when CUDA is initialised
/// in this process and sees the device.
fn cuda_ordinal(uuid: [u8; 16]) -> Option<i32> {
    let n = real::device_count().ok()?;
    (0..n).find(|&i| real::device_uuid_bytes(i).is_ok_and(|u| u == uuid))
}

/// A device as the calling process's tenant sees it.
struct TenantView {
    /// The cap (`u64::MAX`: none).
    cap: u64,
    /// What is left of it.
    left: u64,
    /// The host pids of the tenant's processes on the device, when the
    /// broker told them; None: this process only.
    pids: Option<Vec<u32>>,
}

/// How the calling process's tenant sees an NVML device; None: as NVML
/// shows it (no cap and no broker applies, or nobody can say).
///
/// A process that has initialised CUDA and sees the device gets the driver
/// API's numbers (`cuMemGetInfo`'s). Any other process (one that never
/// initialised CUDA, such as `nvidia-smi` in a tenant's container; or a
/// device outside its `CUDA_VISIBLE_DEVICES`) asks the node's broker, if
/// there is one, on a connection of its own: no CUDA (initialising the
/// driver here would break programs that read NVML, then fork CUDA
/// workers), no thread, and nothing admitted or reserved; its state is
/// built from the environment as a CUDA call would. Under a broker the
/// process list is the tenant's processes (also on a device without a cap:
/// the others are other tenants'). `total` is NVML's (0 when only the
/// process list is wanted).
fn tenant_view(device: NvmlDevice, total: u64, want_pids: bool) -> Option<TenantView> {
    let uuid = nvml_uuid(device)?;
    let s = crate::state::shim();
    let known = s.cuda_initialised() && s.mem_on();
    if let Some(dev) = known.then(|| cuda_ordinal(uuid)).flatten() {
        let pids = s
            .connected_broker()
            .filter(|_| want_pids)
            .and_then(|path| crate::broker::view(path, uuid, total, dev as u32))
            .map(|v| v.pids);
        let capped = s
            .mem_device(dev)
            .ok()
            .flatten()
            .map(|d| (s.mem_limit_shown(d), s.mem_available(d)))
            .filter(|(cap, _)| *cap != u64::MAX);
        if capped.is_none() && pids.is_none() {
            return None;
        }
        let (cap, left) = capped.unwrap_or((u64::MAX, u64::MAX));
        return Some(TenantView { cap, left, pids });
    }
    // Not known to CUDA here: the broker's view (the CUDA ordinal is unknown,
    // so per-ordinal limits of a tenant with no process there do not apply).
    let v = crate::broker::view(s.broker_socket()?, uuid, total, u32::MAX)?;
    Some(TenantView {
        cap: v.limit,
        left: v.limit.saturating_sub(v.reserved),
        pids: Some(v.pids),
    })
}

/// A device's memory as the tenant sees it: the cap as the total, what is
/// left of it as free (never more than NVML says is free). Returns the new
/// (total, free), or None when NVML's numbers stand.
fn clamp(device: NvmlDevice, total: u64, free: u64) -> Option<(u64, u64)> {
    let v = tenant_view(device, total, false)?;
    let total = total.min(v.cap);
    Some((total, free.min(v.left).min(total)))
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
    // SAFETY: NVML filled the caller's structure.
    let m = unsafe { &mut *memory };
    if let Some((total, free)) = clamp(device, m.total, m.free) {
        (m.total, m.free, m.used) = (total, free, total - free);
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
    // SAFETY: NVML filled the caller's structure.
    let m = unsafe { &mut *memory };
    if let Some((total, free)) = clamp(device, m.total, m.free) {
        m.reserved = m.reserved.min(total - free);
        (m.total, m.free, m.used) = (total, free, total - free - m.reserved);
    }
    r
}

/// The tenant's entries of a device's process list, in NVML's protocol
/// (`count` in: the caller's capacity; out: how many there are): this
/// process's, or under a broker the tenant's processes' (the others on the
/// GPU are other tenants').
///
/// # Safety
/// NVML's contract: `count` valid, `infos` holding `*count` elements.
unsafe fn own_processes<T: Process>(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut T,
    f: Option<unsafe extern "C" fn(NvmlDevice, *mut c_uint, *mut T) -> c_uint>,
) -> c_uint {
    let Some(f) = f else {
        return ERROR_FUNCTION_NOT_FOUND;
    };
    // (A list needs no limit: no total to resolve one against.)
    let view = if count.is_null() {
        None
    } else {
        tenant_view(device, 0, true)
    };
    let Some(view) = view else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(device, count, infos) };
    };
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
    let tenant = view
        .pids
        .unwrap_or_else(|| vec![crate::state::shim().host_pid()]);
    let mine: Vec<T> = all
        .into_iter()
        .filter(|p| tenant.contains(&p.pid()))
        .collect();
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

/// An entry of a process list (v1 or v2 layout).
pub trait Process: Copy + Default {
    fn pid(&self) -> c_uint;
}

impl Process for ProcessV1 {
    fn pid(&self) -> c_uint {
        self.pid
    }
}

impl Process for ProcessV2 {
    fn pid(&self) -> c_uint {
        self.pid
    }
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses`.
pub unsafe fn processes_v1(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV1,
) -> c_uint {
    // SAFETY: forwarded.
    unsafe {
        own_processes(
            device,
            count,
            infos,
            nvml_orig::nvmlDeviceGetComputeRunningProcesses(),
        )
    }
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses_v2`.
pub unsafe fn processes_v2(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> c_uint {
    // SAFETY: forwarded.
    unsafe {
        own_processes(
            device,
            count,
            infos,
            nvml_orig::nvmlDeviceGetComputeRunningProcesses_v2(),
        )
    }
}

/// # Safety
/// NVML's contract for `nvmlDeviceGetComputeRunningProcesses_v3`.
pub unsafe fn processes_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> c_uint {
    // SAFETY: forwarded.
    unsafe {
        own_processes(
            device,
            count,
            infos,
            nvml_orig::nvmlDeviceGetComputeRunningProcesses_v3(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_of_either_kind_are_read_as_bytes() {
        let b = uuid_bytes("GPU-01234567-89ab-cdef-0123-456789ABCDEF").unwrap();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[15], 0xef);
        assert_eq!(
            uuid_bytes("MIG-01234567-89ab-cdef-0123-456789abcdef"),
            Some(b)
        );
        assert_eq!(uuid_bytes("GPU-0123"), None);
        assert_eq!(uuid_bytes("nonsense"), None);
    }

    #[test]
    fn layouts_are_nvmls() {
        assert_eq!(std::mem::size_of::<Memory>(), 24);
        assert_eq!(std::mem::size_of::<MemoryV2>(), 40);
        assert_eq!(std::mem::size_of::<ProcessV1>(), 16);
        assert_eq!(std::mem::size_of::<ProcessV2>(), 24);
    }
}

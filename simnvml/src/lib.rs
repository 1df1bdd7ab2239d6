//! # simnvml
//!
//! The simulated NVML: `libnvidia-ml.so.1` over the same shared device
//! state as the simulated driver (`simgpu`), so that what NVML reports is
//! what the driver's processes did: the device count, names, UUIDs (equal to
//! `cuDeviceGetUuid`'s), PCI ids, memory (the device's ledger), the running
//! compute processes with their memory, and utilization (the share of time
//! the device ran work since the previous query). Opening NVML creates no
//! process of the device (as with a real one, only CUDA contexts do).
//!
//! The C ABI is NVML's (`nvml.h` of the pinned toolkit); every entry point
//! catches panics and answers `NVML_ERROR_UNKNOWN` instead.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

type Ret = c_uint;
const SUCCESS: Ret = 0;
const UNINITIALIZED: Ret = 1;
const INVALID_ARGUMENT: Ret = 2;
const NOT_SUPPORTED: Ret = 3;
const NOT_FOUND: Ret = 6;
const INSUFFICIENT_SIZE: Ret = 7;
const DRIVER_NOT_LOADED: Ret = 9;
const ARGUMENT_VERSION_MISMATCH: Ret = 25;
const UNKNOWN: Ret = 999;

/// The simulated driver's version as NVML spells it (its CUDA version is
/// `SIMCUDA_DRIVER_VERSION`'s).
const DRIVER_VERSION: &str = "590.48.01";
const NVML_VERSION: &str = "13.590.48.01";

/// One device.
pub struct Dev {
    index: u32,
    uuid: String,
    total: u64,
    dir: std::path::PathBuf,
    /// (time, busy) of the previous utilization query, and its answer.
    util: Mutex<(u64, u64, u32)>,
    _sim: simgpu::Device,
}

impl Dev {
    fn monitor(&self) -> Option<simgpu::Monitor> {
        simgpu::Monitor::open(&self.dir, self.index).ok()
    }
}

static DEVICES: OnceLock<Result<Vec<Dev>, String>> = OnceLock::new();
static INITS: AtomicU32 = AtomicU32::new(0);

fn open_all() -> Result<Vec<Dev>, String> {
    let cfg = simgpu::Config::from_env()?;
    (0..cfg.devices)
        .map(|i| {
            let sim = simgpu::Device::open(&cfg, i).map_err(|e| e.to_string())?;
            Ok(Dev {
                index: i,
                uuid: cuda_abi::CUuuid { bytes: sim.uuid() }.to_gpu_string(),
                total: sim.total_mem(),
                dir: cfg.dir.clone(),
                util: Mutex::new((0, 0, 0)),
                _sim: sim,
            })
        })
        .collect()
}

fn devices() -> Result<&'static [Dev], Ret> {
    if INITS.load(Ordering::Acquire) == 0 {
        return Err(UNINITIALIZED);
    }
    match DEVICES.get() {
        Some(Ok(d)) => Ok(d),
        _ => Err(DRIVER_NOT_LOADED),
    }
}

/// Runs an entry point: panics become `NVML_ERROR_UNKNOWN`.
fn run(f: impl FnOnce() -> Result<(), Ret>) -> Ret {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => UNKNOWN,
    }
}

/// The device behind a handle (handles point into the device table).
fn dev(h: *const Dev) -> Result<&'static Dev, Ret> {
    devices()?
        .iter()
        .find(|d| std::ptr::eq(*d, h))
        .ok_or(INVALID_ARGUMENT)
}

/// Writes `v` to an output pointer.
///
/// # Safety
/// `p` is NULL or valid for a write of `T` (the caller's promise).
unsafe fn out<T>(p: *mut T, v: T) -> Result<(), Ret> {
    if p.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, and writable per the function contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Copies a string into a caller's buffer of `len` bytes (with its NUL).
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes.
unsafe fn out_str(buf: *mut c_char, len: c_uint, v: &str) -> Result<(), Ret> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    if (len as usize) < v.len() + 1 {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: len > v.len() bytes are writable; the source is ours.
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), buf.cast::<u8>(), v.len());
        *buf.add(v.len()) = 0;
    }
    Ok(())
}

/// A caller's C string.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn in_str<'a>(s: *const c_char) -> Result<&'a str, Ret> {
    if s.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: NUL-terminated per the function contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| INVALID_ARGUMENT)
}

fn init() -> Result<(), Ret> {
    match DEVICES.get_or_init(open_all) {
        Ok(_) => {
            INITS.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
        Err(msg) => {
            eprintln!(
                "[simnvml {}] cannot open the simulated devices: {msg}",
                std::process::id()
            );
            Err(DRIVER_NOT_LOADED)
        }
    }
}

/// # Safety
/// NVML's contract for each entry point (pointers valid as documented).
#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> Ret {
    run(init)
}

#[no_mangle]
pub extern "C" fn nvmlInit() -> Ret {
    run(init)
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Ret {
    run(init)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> Ret {
    run(|| {
        INITS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| UNINITIALIZED)
    })
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(r: Ret) -> *const c_char {
    let s: &'static CStr = match r {
        SUCCESS => c"Success",
        UNINITIALIZED => c"Uninitialized",
        INVALID_ARGUMENT => c"Invalid Argument",
        NOT_SUPPORTED => c"Not Supported",
        NOT_FOUND => c"Not Found",
        INSUFFICIENT_SIZE => c"Insufficient Size",
        DRIVER_NOT_LOADED => c"Driver Not Loaded",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

/// # Safety
/// `version` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, len: c_uint) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out_str(version, len, DRIVER_VERSION) })
}

/// # Safety
/// `version` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, len: c_uint) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out_str(version, len, NVML_VERSION) })
}

fn cuda_version() -> c_int {
    std::env::var("SIMCUDA_DRIVER_VERSION")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(13050)
}

/// # Safety
/// `v` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(v: *mut c_int) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(v, cuda_version()) })
}

/// # Safety
/// `v` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(v: *mut c_int) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(v, cuda_version()) })
}

/// # Safety
/// `n` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(n: *mut c_uint) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(n, devices()?.len() as c_uint) })
}

/// # Safety
/// `n` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(n: *mut c_uint) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetCount_v2(n) }
}

/// # Safety
/// `h` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(i: c_uint, h: *mut *const Dev) -> Ret {
    run(|| {
        let d = devices()?.get(i as usize).ok_or(INVALID_ARGUMENT)?;
        // SAFETY: per the function contract.
        unsafe { out(h, d as *const Dev) }
    })
}

/// # Safety
/// `h` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(i: c_uint, h: *mut *const Dev) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetHandleByIndex_v2(i, h) }
}

/// # Safety
/// `uuid` is a C string; `h` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, h: *mut *const Dev) -> Ret {
    run(|| {
        // SAFETY: per the function contract.
        let want = unsafe { in_str(uuid) }?;
        let d = devices()?
            .iter()
            .find(|d| d.uuid.eq_ignore_ascii_case(want))
            .ok_or(NOT_FOUND)?;
        // SAFETY: per the function contract.
        unsafe { out(h, d as *const Dev) }
    })
}

fn bus_id(d: &Dev) -> String {
    format!("00000000:{:02X}:00.0", simgpu::pci_bus(d.index))
}

/// # Safety
/// `bus` is a C string; `h` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus: *const c_char,
    h: *mut *const Dev,
) -> Ret {
    run(|| {
        // SAFETY: per the function contract.
        let want = unsafe { in_str(bus) }?.trim().to_ascii_uppercase();
        let d = devices()?
            .iter()
            .find(|d| {
                let full = bus_id(d);
                // 0000:18:00.0 (legacy, 4-digit domain) or the 8-digit form.
                want == full || want == full[4..]
            })
            .ok_or(NOT_FOUND)?;
        // SAFETY: per the function contract.
        unsafe { out(h, d as *const Dev) }
    })
}

/// # Safety
/// `bus` is a C string; `h` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    bus: *const c_char,
    h: *mut *const Dev,
) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetHandleByPciBusId_v2(bus, h) }
}

/// # Safety
/// `name` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(h: *const Dev, name: *mut c_char, len: c_uint) -> Ret {
    run(|| {
        dev(h)?;
        // SAFETY: per the function contract.
        unsafe { out_str(name, len, simgpu::DEVICE_NAME) }
    })
}

/// # Safety
/// `uuid` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(h: *const Dev, uuid: *mut c_char, len: c_uint) -> Ret {
    run(|| {
        let d = dev(h)?;
        // SAFETY: per the function contract.
        unsafe { out_str(uuid, len, &d.uuid) }
    })
}

/// # Safety
/// `i` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(h: *const Dev, i: *mut c_uint) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(i, dev(h)?.index) })
}

/// # Safety
/// `m` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(h: *const Dev, m: *mut c_uint) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(m, dev(h)?.index) })
}

/// `nvmlMemory_t`.
#[repr(C)]
pub struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: c_ulonglong,
    reserved: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlMemory_v2`: the structure's size and version 2.
pub const MEMORY_V2: c_uint = std::mem::size_of::<MemoryV2>() as c_uint | (2 << 24);

fn used(d: &Dev) -> u64 {
    d.monitor()
        .map_or(0, |m| m.snapshot().mem_used)
        .min(d.total)
}

/// # Safety
/// `m` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(h: *const Dev, m: *mut Memory) -> Ret {
    run(|| {
        let d = dev(h)?;
        let u = used(d);
        // SAFETY: per the function contract.
        unsafe {
            out(
                m,
                Memory {
                    total: d.total,
                    free: d.total - u,
                    used: u,
                },
            )
        }
    })
}

/// # Safety
/// `m` is valid for a write of an `nvmlMemory_v2_t` whose `version` is set.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(h: *const Dev, m: *mut MemoryV2) -> Ret {
    run(|| {
        let d = dev(h)?;
        if m.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        // SAFETY: per the function contract.
        if unsafe { (*m).version } != MEMORY_V2 {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        let u = used(d);
        // SAFETY: per the function contract.
        unsafe {
            out(
                m,
                MemoryV2 {
                    version: MEMORY_V2,
                    total: d.total,
                    reserved: 0,
                    free: d.total - u,
                    used: u,
                },
            )
        }
    })
}

/// `nvmlProcessInfo_v1_t`.
#[repr(C)]
pub struct ProcessV1 {
    pid: c_uint,
    used: c_ulonglong,
}

/// `nvmlProcessInfo_t` (v2, also what `_v3` fills).
#[repr(C)]
pub struct ProcessV2 {
    pid: c_uint,
    used: c_ulonglong,
    gpu_instance: c_uint,
    compute_instance: c_uint,
}

/// The device's live processes and their memory.
fn processes(d: &Dev) -> Vec<(u32, u64)> {
    d.monitor()
        .map(|m| {
            m.snapshot()
                .processes
                .iter()
                .filter(|p| p.alive)
                .map(|p| (p.pid, p.mem_used))
                .collect()
        })
        .unwrap_or_default()
}

/// Fills a caller's array: NVML's protocol (`count` in: its capacity, out:
/// how many there are; too small: INSUFFICIENT_SIZE with the count).
///
/// # Safety
/// `count` is valid; `infos` holds `*count` elements (or is NULL with 0).
unsafe fn fill<T>(
    count: *mut c_uint,
    infos: *mut T,
    list: &[(u32, u64)],
    make: impl Fn(u32, u64) -> T,
) -> Result<(), Ret> {
    if count.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: per the function contract.
    let cap = unsafe { *count } as usize;
    // SAFETY: per the function contract.
    unsafe { *count = list.len() as c_uint };
    if cap < list.len() {
        return Err(INSUFFICIENT_SIZE);
    }
    if !list.is_empty() && infos.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    for (i, (pid, used)) in list.iter().enumerate() {
        // SAFETY: i < cap elements are writable.
        unsafe { infos.add(i).write(make(*pid, *used)) };
    }
    Ok(())
}

/// # Safety
/// NVML's contract (see [`fill`]).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    h: *const Dev,
    count: *mut c_uint,
    infos: *mut ProcessV1,
) -> Ret {
    run(|| {
        let list = processes(dev(h)?);
        // SAFETY: per the function contract.
        unsafe { fill(count, infos, &list, |pid, used| ProcessV1 { pid, used }) }
    })
}

/// # Safety
/// NVML's contract (see [`fill`]).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    h: *const Dev,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetComputeRunningProcesses_v3(h, count, infos) }
}

/// # Safety
/// NVML's contract (see [`fill`]).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    h: *const Dev,
    count: *mut c_uint,
    infos: *mut ProcessV2,
) -> Ret {
    run(|| {
        let list = processes(dev(h)?);
        // SAFETY: per the function contract.
        unsafe {
            fill(count, infos, &list, |pid, used| ProcessV2 {
                pid,
                used,
                gpu_instance: u32::MAX,
                compute_instance: u32::MAX,
            })
        }
    })
}

/// `nvmlUtilization_t`.
#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

/// # Safety
/// `u` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(h: *const Dev, u: *mut Utilization) -> Ret {
    run(|| {
        let d = dev(h)?;
        let det = d.monitor().and_then(|m| m.details().ok()).ok_or(UNKNOWN)?;
        let now = det.snapshot.now_ns;
        let busy = det.busy_ns;
        let mut last = d.util.lock().unwrap_or_else(|p| p.into_inner());
        // Over the time since the previous query (at least 1 ms; the first
        // query covers the device's life).
        if now.saturating_sub(last.0) >= 1_000_000 {
            let dt = now - last.0;
            let db = busy.saturating_sub(last.1).min(dt);
            *last = (now, busy, (db as u128 * 100 / dt as u128) as u32);
        }
        let gpu = last.2;
        drop(last);
        // SAFETY: per the function contract.
        unsafe {
            out(
                u,
                Utilization {
                    gpu,
                    memory: gpu.min(100) / 2,
                },
            )
        }
    })
}

/// `nvmlPciInfo_t`.
#[repr(C)]
pub struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_subsystem_id: c_uint,
    bus_id: [c_char; 32],
}

fn pci(d: &Dev) -> PciInfo {
    let mut legacy = [0 as c_char; 16];
    let mut full = [0 as c_char; 32];
    let b = bus_id(d);
    for (dst, src) in full.iter_mut().zip(b.bytes()) {
        *dst = src as c_char;
    }
    for (dst, src) in legacy.iter_mut().zip(b[4..].bytes()) {
        *dst = src as c_char;
    }
    PciInfo {
        bus_id_legacy: legacy,
        domain: 0,
        bus: simgpu::pci_bus(d.index),
        device: 0,
        // H100 SXM5: device 0x2330, vendor 0x10de.
        pci_device_id: 0x2330_10de,
        pci_subsystem_id: 0x16c1_10de,
        bus_id: full,
    }
}

/// # Safety
/// `p` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(h: *const Dev, p: *mut PciInfo) -> Ret {
    // SAFETY: per the function contract.
    run(|| unsafe { out(p, pci(dev(h)?)) })
}

/// # Safety
/// `p` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(h: *const Dev, p: *mut PciInfo) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetPciInfo_v3(h, p) }
}

/// # Safety
/// `p` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(h: *const Dev, p: *mut PciInfo) -> Ret {
    // SAFETY: per the function contract.
    unsafe { nvmlDeviceGetPciInfo_v3(h, p) }
}

/// # Safety
/// `major`, `minor` are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    h: *const Dev,
    major: *mut c_int,
    minor: *mut c_int,
) -> Ret {
    run(|| {
        dev(h)?;
        // SAFETY: per the function contract.
        unsafe {
            out(major, 9)?;
            out(minor, 0)
        }
    })
}

/// The simulated devices have no NVLink: every link query is unsupported.
#[no_mangle]
pub extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(
    h: *const Dev,
    _link: c_uint,
    _t: *mut c_uint,
) -> Ret {
    run(|| {
        dev(h)?;
        Err(NOT_SUPPORTED)
    })
}

#[no_mangle]
pub extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    h: *const Dev,
    _link: c_uint,
    _p: *mut PciInfo,
) -> Ret {
    run(|| {
        dev(h)?;
        Err(NOT_SUPPORTED)
    })
}

#[no_mangle]
pub extern "C" fn nvmlDeviceGetNvLinkState(
    h: *const Dev,
    _link: c_uint,
    _active: *mut c_uint,
) -> Ret {
    run(|| {
        dev(h)?;
        Err(NOT_SUPPORTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_nvmls() {
        assert_eq!(std::mem::size_of::<Memory>(), 24);
        assert_eq!(std::mem::size_of::<MemoryV2>(), 40);
        assert_eq!(MEMORY_V2, 40 | (2 << 24));
        assert_eq!(std::mem::size_of::<ProcessV1>(), 16);
        assert_eq!(std::mem::size_of::<ProcessV2>(), 24);
        assert_eq!(std::mem::size_of::<PciInfo>(), 16 + 20 + 32);
        assert_eq!(std::mem::size_of::<Utilization>(), 8);
    }

    #[test]
    fn nothing_answers_before_init() {
        let mut n = 0;
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut n) }, UNINITIALIZED);
        assert_eq!(nvmlShutdown(), UNINITIALIZED);
        // SAFETY: a C string from the library.
        let s = unsafe { CStr::from_ptr(nvmlErrorString(UNINITIALIZED)) };
        assert_eq!(s.to_str().unwrap(), "Uninitialized");
    }
}

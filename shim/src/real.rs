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
///
/// # Safety
/// `name` must point to a NUL-terminated string; `handle` is any value
/// `dlsym` accepts.
pub unsafe fn real_dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    if !ensure_real_dlsym() {
        return std::ptr::null_mut();
    }
    let p = REAL_DLSYM.load(Ordering::Acquire);
    // SAFETY: p is glibc's dlsym (resolved above), whose signature is DlsymFn.
    let f: DlsymFn = unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(p) };
    // SAFETY: forwarded from the caller.
    unsafe { f(handle, name) }
}

const UNINIT: u8 = 0;
const READY: u8 = 2;
const FAILED: u8 = 3;

static DRIVER_STATE: AtomicU8 = AtomicU8::new(UNINIT);

thread_local! {
    static RESOLVING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Makes sure the real driver is loaded and every original resolved.
/// Returns false if the driver cannot be loaded, or when called
/// re-entrantly from inside the resolution itself (the driver's
/// constructors looking symbols up through our `dlsym`), in which case the
/// caller passes the call through.
///
/// Resolution is idempotent (the same `dlopen` handle, the same `dlsym`
/// answers), so there is no "in progress" state: a thread that finds the
/// driver unresolved resolves it itself, even while another thread does the
/// same, and nobody ever waits for anybody. That is what makes first use
/// safe from every angle: no thread can get an unresolved original (or the
/// real function, from `dlsym`) because another thread was "still
/// resolving", none can wait on a thread that waits for the loader lock it
/// holds, and a child forked in the middle never inherits a resolution that
/// will not finish.
#[inline]
pub fn ensure_driver() -> bool {
    match DRIVER_STATE.load(Ordering::Acquire) {
        READY => true,
        FAILED => false,
        _ => ensure_driver_slow(),
    }
}

#[cold]
#[inline(never)]
fn ensure_driver_slow() -> bool {
    if RESOLVING_HERE.with(|r| r.replace(true)) {
        return false;
    }
    let r = resolve_driver();
    RESOLVING_HERE.with(|r| r.set(false));
    // The first thread to finish publishes (and says why it failed); the
    // others resolved the same thing, or failed the same way.
    let verdict = if r.is_ok() { READY } else { FAILED };
    if DRIVER_STATE
        .compare_exchange(UNINIT, verdict, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        if let Err(why) = r {
            log::error!("{why}; CUDA calls in this process return CUDA_ERROR_NOT_INITIALIZED");
        }
    }
    DRIVER_STATE.load(Ordering::Acquire) == READY
}

/// Stores a resolved pointer into an empty slot. A slot is never
/// overwritten: concurrent resolutions find the same pointer, and one that
/// `cuGetProcAddress` adopted must not be replaced by an absent export.
fn fill(slot: &AtomicPtr<c_void>, p: *mut c_void) {
    if !p.is_null() {
        let _ = slot.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire);
    }
}

fn resolve_driver() -> Result<(), String> {
    if !ensure_real_dlsym() {
        return Err("glibc's dlsym cannot be found".into());
    }
    let path = std::env::var_os("TSLICE_LIBCUDA");
    let cpath = match &path {
        Some(p) => match std::ffi::CString::new(p.as_encoded_bytes()) {
            Ok(c) => c,
            Err(_) => {
                return Err(
                    "TSLICE_LIBCUDA contains a NUL byte; accepted: a path to libcuda.so.1".into(),
                )
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
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("cannot load the CUDA driver {:?}: {msg}", cpath));
    }
    for (i, hook) in hooks::HOOKS.iter().enumerate() {
        // SAFETY: export_c is a NUL-terminated literal.
        let p = unsafe { real_dlsym(h, hook.export_c.as_ptr().cast()) };
        if p == hooks::wrapper(i) {
            log::error!(
                "{} in {:?} resolves to tslice itself; not hooking it",
                hook.export,
                cpath
            );
            continue;
        }
        if p.is_null() {
            log::debug!("the driver does not export {}", hook.export);
        }
        fill(&ORIGINALS[i], p);
    }
    for (i, spec) in HELPER_SPECS.iter().enumerate() {
        fill(&HELPERS[i], resolve_helper(spec, h));
    }
    Ok(())
}

/// Unhooked driver functions the shim calls itself.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Helper {
    CtxGetDevice,
    DeviceGetUuid,
    DeviceGetCount,
    CtxGetCurrent,
    EventCreate,
    EventRecord,
    EventQuery,
    EventElapsedTime,
    EventDestroy,
    StreamIsCapturing,
    ThreadExchangeStreamCaptureMode,
    PrimaryCtxGetState,
    StreamGetDevice,
    StreamGetCtx,
    CtxGetId,
    GraphGetNodes,
    GraphNodeGetType,
    GraphMemAllocNodeGetParams,
    DeviceGetGraphMemAttribute,
}

/// How to find a helper: through the driver's own `cuGetProcAddress_v2`
/// (base name and ABI version, the canonical way), else by exported name.
struct HelperSpec {
    base: &'static std::ffi::CStr,
    version: c_int,
    export: &'static std::ffi::CStr,
}
const HELPER_SPECS: [HelperSpec; 19] = [
    HelperSpec {
        base: c"cuCtxGetDevice",
        version: 2000,
        export: c"cuCtxGetDevice",
    },
    HelperSpec {
        base: c"cuDeviceGetUuid",
        version: 11040,
        export: c"cuDeviceGetUuid_v2",
    },
    HelperSpec {
        base: c"cuDeviceGetCount",
        version: 2000,
        export: c"cuDeviceGetCount",
    },
    HelperSpec {
        base: c"cuCtxGetCurrent",
        version: 4000,
        export: c"cuCtxGetCurrent",
    },
    HelperSpec {
        base: c"cuEventCreate",
        version: 2000,
        export: c"cuEventCreate",
    },
    // The legacy-stream entry: events go on the launch's stream, with
    // CU_STREAM_PER_THREAD standing for a per-thread launch's default stream.
    HelperSpec {
        base: c"cuEventRecord",
        version: 2000,
        export: c"cuEventRecord",
    },
    HelperSpec {
        base: c"cuEventQuery",
        version: 2000,
        export: c"cuEventQuery",
    },
    HelperSpec {
        base: c"cuEventElapsedTime",
        version: 2000,
        export: c"cuEventElapsedTime",
    },
    HelperSpec {
        base: c"cuEventDestroy",
        version: 4000,
        export: c"cuEventDestroy_v2",
    },
    HelperSpec {
        base: c"cuStreamIsCapturing",
        version: 10000,
        export: c"cuStreamIsCapturing",
    },
    HelperSpec {
        base: c"cuThreadExchangeStreamCaptureMode",
        version: 10010,
        export: c"cuThreadExchangeStreamCaptureMode",
    },
    HelperSpec {
        base: c"cuDevicePrimaryCtxGetState",
        version: 7000,
        export: c"cuDevicePrimaryCtxGetState",
    },
    // Legacy-stream entry; per-thread callers pass CU_STREAM_PER_THREAD.
    HelperSpec {
        base: c"cuStreamGetDevice",
        version: 12080,
        export: c"cuStreamGetDevice",
    },
    // Legacy-stream entry, as above.
    HelperSpec {
        base: c"cuStreamGetCtx",
        version: 9020,
        export: c"cuStreamGetCtx",
    },
    HelperSpec {
        base: c"cuCtxGetId",
        version: 12000,
        export: c"cuCtxGetId",
    },
    HelperSpec {
        base: c"cuGraphGetNodes",
        version: 10000,
        export: c"cuGraphGetNodes",
    },
    HelperSpec {
        base: c"cuGraphNodeGetType",
        version: 10000,
        export: c"cuGraphNodeGetType",
    },
    HelperSpec {
        base: c"cuGraphMemAllocNodeGetParams",
        version: 11040,
        export: c"cuGraphMemAllocNodeGetParams",
    },
    HelperSpec {
        base: c"cuDeviceGetGraphMemAttribute",
        version: 11040,
        export: c"cuDeviceGetGraphMemAttribute",
    },
];
// One spec per helper, in the enum's order.
const _: () = assert!(Helper::DeviceGetGraphMemAttribute as usize + 1 == HELPER_SPECS.len());
static HELPERS: [AtomicPtr<c_void>; HELPER_SPECS.len()] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; HELPER_SPECS.len()];

fn resolve_helper(h: &HelperSpec, driver: *mut c_void) -> *mut c_void {
    if let Some(gpa) = hooks::orig::cuGetProcAddress_v2() {
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut status: CUdriverProcAddressQueryResult = 0;
        // SAFETY: the real cuGetProcAddress_v2 with a static name and valid out-pointers.
        let r = unsafe {
            gpa(
                h.base.as_ptr(),
                &mut p,
                h.version,
                CU_GET_PROC_ADDRESS_DEFAULT,
                &mut status,
            )
        };
        if r.is_success() && !p.is_null() {
            return p;
        }
    }
    // SAFETY: a NUL-terminated literal.
    unsafe { real_dlsym(driver, h.export.as_ptr()) }
}

fn helper(h: Helper) -> *mut c_void {
    HELPERS[h as usize].load(Ordering::Acquire)
}

/// Calls a helper through a function-pointer type `$ty`, or returns
/// `Err(CUDA_ERROR_NOT_FOUND)` when the driver lacks it.
macro_rules! call_helper {
    ($h:expr, $ty:ty, $($arg:expr),*) => {{
        let p = helper($h);
        if p.is_null() {
            Err(CUresult::ERROR_NOT_FOUND)
        } else {
            // SAFETY: the helper was resolved under the name and ABI version
            // whose C signature is `$ty`.
            let f = unsafe { std::mem::transmute::<*mut c_void, $ty>(p) };
            // SAFETY: the arguments satisfy that function's contract (valid
            // out-pointers, handles the driver gave us).
            let r = unsafe { f($($arg),*) };
            if r.is_success() { Ok(()) } else { Err(r) }
        }
    }};
}

/// The device of the calling thread's current context.
pub fn current_device() -> Result<CUdevice, CUresult> {
    let mut dev: CUdevice = -1;
    call_helper!(
        Helper::CtxGetDevice,
        unsafe extern "C" fn(*mut CUdevice) -> CUresult,
        &mut dev
    )?;
    Ok(dev)
}

/// The device of a stream (`Err(CUDA_ERROR_NOT_FOUND)` from a driver
/// older than CUDA 12.8, which lacks `cuStreamGetDevice`).
pub fn stream_device(stream: CUstream) -> Result<CUdevice, CUresult> {
    let mut dev: CUdevice = -1;
    call_helper!(
        Helper::StreamGetDevice,
        unsafe extern "C" fn(CUstream, *mut CUdevice) -> CUresult,
        stream,
        &mut dev
    )?;
    Ok(dev)
}

/// The context of a stream (legacy entry: pass `CU_STREAM_PER_THREAD` for
/// a per-thread default stream).
pub fn stream_ctx(stream: CUstream) -> Result<CUcontext, CUresult> {
    let mut c: CUcontext = std::ptr::null_mut();
    call_helper!(
        Helper::StreamGetCtx,
        unsafe extern "C" fn(CUstream, *mut CUcontext) -> CUresult,
        stream,
        &mut c
    )?;
    Ok(c)
}

/// A context's unique id (never reused, unlike handle values).
pub fn ctx_id(ctx: CUcontext) -> Result<u64, CUresult> {
    let mut id: u64 = 0;
    call_helper!(
        Helper::CtxGetId,
        unsafe extern "C" fn(CUcontext, *mut u64) -> CUresult,
        ctx,
        &mut id
    )?;
    Ok(id)
}

/// The UUID of a device, as bytes.
pub fn device_uuid_bytes(dev: CUdevice) -> Result<[u8; 16], CUresult> {
    let mut u = CUuuid::default();
    call_helper!(
        Helper::DeviceGetUuid,
        unsafe extern "C" fn(*mut CUuuid, CUdevice) -> CUresult,
        &mut u,
        dev
    )?;
    Ok(u.bytes)
}

/// The UUID of a device as `nvidia-smi -L` prints it.
pub fn device_uuid(dev: CUdevice) -> Result<String, CUresult> {
    Ok(CUuuid {
        bytes: device_uuid_bytes(dev)?,
    }
    .to_gpu_string())
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

pub fn device_count() -> Result<c_int, CUresult> {
    let mut n: c_int = 0;
    call_helper!(
        Helper::DeviceGetCount,
        unsafe extern "C" fn(*mut c_int) -> CUresult,
        &mut n
    )?;
    Ok(n)
}

pub fn ctx_get_current() -> Result<CUcontext, CUresult> {
    let mut c: CUcontext = std::ptr::null_mut();
    call_helper!(
        Helper::CtxGetCurrent,
        unsafe extern "C" fn(*mut CUcontext) -> CUresult,
        &mut c
    )?;
    Ok(c)
}

pub fn event_create(flags: u32) -> Result<CUevent, CUresult> {
    let mut e: CUevent = std::ptr::null_mut();
    call_helper!(
        Helper::EventCreate,
        unsafe extern "C" fn(*mut CUevent, u32) -> CUresult,
        &mut e,
        flags
    )?;
    Ok(e)
}

pub fn event_record(e: CUevent, stream: CUstream) -> Result<(), CUresult> {
    call_helper!(
        Helper::EventRecord,
        unsafe extern "C" fn(CUevent, CUstream) -> CUresult,
        e,
        stream
    )
}

/// Ok(true) when complete, Ok(false) while not ready.
pub fn event_query(e: CUevent) -> Result<bool, CUresult> {
    match call_helper!(
        Helper::EventQuery,
        unsafe extern "C" fn(CUevent) -> CUresult,
        e
    ) {
        Ok(()) => Ok(true),
        Err(CUresult::ERROR_NOT_READY) => Ok(false),
        Err(r) => Err(r),
    }
}

/// Nanoseconds between two completed timing events.
pub fn event_elapsed_ns(start: CUevent, end: CUevent) -> Result<u64, CUresult> {
    let mut ms: f32 = 0.0;
    call_helper!(
        Helper::EventElapsedTime,
        unsafe extern "C" fn(*mut f32, CUevent, CUevent) -> CUresult,
        &mut ms,
        start,
        end
    )?;
    Ok((ms.max(0.0) as f64 * 1e6) as u64)
}

pub fn event_destroy(e: CUevent) {
    let _ = call_helper!(
        Helper::EventDestroy,
        unsafe extern "C" fn(CUevent) -> CUresult,
        e
    );
}

/// Whether `stream` is being captured into a graph (errors count as yes:
/// such a launch is passed through untouched).
pub fn stream_is_capturing(stream: CUstream) -> bool {
    let mut status: u32 = 0;
    match call_helper!(
        Helper::StreamIsCapturing,
        unsafe extern "C" fn(CUstream, *mut u32) -> CUresult,
        stream,
        &mut status
    ) {
        Ok(()) => status != 0,
        Err(CUresult::ERROR_NOT_FOUND) => false,
        Err(_) => true,
    }
}

/// Whether `stream` is being captured, None when the driver cannot say.
pub fn stream_capture_status(stream: CUstream) -> Option<bool> {
    let mut status: u32 = 0;
    call_helper!(
        Helper::StreamIsCapturing,
        unsafe extern "C" fn(CUstream, *mut u32) -> CUresult,
        stream,
        &mut status
    )
    .ok()
    .map(|()| status != 0)
}

/// Whether a device's primary context is active (None if unknown).
pub fn primary_ctx_active(dev: CUdevice) -> Option<bool> {
    let (mut flags, mut active): (u32, c_int) = (0, 0);
    call_helper!(
        Helper::PrimaryCtxGetState,
        unsafe extern "C" fn(CUdevice, *mut u32, *mut c_int) -> CUresult,
        dev,
        &mut flags,
        &mut active
    )
    .ok()?;
    Some(active != 0)
}

/// `CU_STREAM_CAPTURE_MODE_RELAXED`.
const CAPTURE_MODE_RELAXED: u32 = 2;

/// Switches the calling thread to the relaxed capture mode; returns the
/// previous mode to restore, or None if the driver cannot.
pub fn relax_capture_mode() -> Option<u32> {
    let mut mode = CAPTURE_MODE_RELAXED;
    call_helper!(
        Helper::ThreadExchangeStreamCaptureMode,
        unsafe extern "C" fn(*mut u32) -> CUresult,
        &mut mode
    )
    .ok()?;
    Some(mode)
}

pub fn restore_capture_mode(mut mode: u32) {
    let _ = call_helper!(
        Helper::ThreadExchangeStreamCaptureMode,
        unsafe extern "C" fn(*mut u32) -> CUresult,
        &mut mode
    );
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock the simulated GPU uses too).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS`: pool properties (88 bytes), access
/// descriptors and their count, the size, the address.
#[repr(C)]
struct MemAllocNodeParams {
    alloc_type: u32,
    handle_types: u32,
    location_type: u32,
    location_id: c_int,
    _pool_rest: [u8; 72],
    access_descs: *const c_void,
    access_desc_count: usize,
    bytesize: usize,
    dptr: u64,
}
const _: () = assert!(std::mem::size_of::<MemAllocNodeParams>() == 120);

/// CU_GRAPH_NODE_TYPE_MEM_ALLOC.
const NODE_MEM_ALLOC: u32 = 10;

/// The memory-allocation nodes of a graph: (device, bytes asked for) each.
/// Child graphs are not entered.
pub fn graph_mem_allocs(graph: CUgraph) -> Result<Vec<(CUdevice, u64)>, CUresult> {
    let mut n: usize = 0;
    call_helper!(
        Helper::GraphGetNodes,
        unsafe extern "C" fn(CUgraph, *mut CUgraphNode, *mut usize) -> CUresult,
        graph,
        std::ptr::null_mut(),
        &mut n
    )?;
    let mut nodes: Vec<CUgraphNode> = vec![std::ptr::null_mut(); n];
    call_helper!(
        Helper::GraphGetNodes,
        unsafe extern "C" fn(CUgraph, *mut CUgraphNode, *mut usize) -> CUresult,
        graph,
        nodes.as_mut_ptr(),
        &mut n
    )?;
    nodes.truncate(n);
    let mut out = Vec::new();
    for node in nodes {
        let mut ty: u32 = 0;
        call_helper!(
            Helper::GraphNodeGetType,
            unsafe extern "C" fn(CUgraphNode, *mut u32) -> CUresult,
            node,
            &mut ty
        )?;
        if ty != NODE_MEM_ALLOC {
            continue;
        }
        // SAFETY: an all-zero value of this plain struct is valid.
        let mut p: MemAllocNodeParams = unsafe { std::mem::zeroed() };
        call_helper!(
            Helper::GraphMemAllocNodeGetParams,
            unsafe extern "C" fn(CUgraphNode, *mut MemAllocNodeParams) -> CUresult,
            node,
            &mut p
        )?;
        // CU_MEM_LOCATION_TYPE_DEVICE (1); host allocations are not device memory.
        if p.location_type == 1 {
            out.push((p.location_id, p.bytesize as u64));
        }
    }
    Ok(out)
}

/// The device's graph memory the driver holds now
/// (CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT).
pub fn graph_mem_reserved(dev: CUdevice) -> Result<u64, CUresult> {
    let mut v: u64 = 0;
    call_helper!(
        Helper::DeviceGetGraphMemAttribute,
        unsafe extern "C" fn(CUdevice, u32, *mut c_void) -> CUresult,
        dev,
        2,
        (&mut v as *mut u64).cast()
    )?;
    Ok(v)
}

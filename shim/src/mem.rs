//! Device-memory caps.
//!
//! Every allocation path reserves its charge in the device's ledger *before*
//! the real call and rolls the reservation back if the driver fails, so
//! concurrent threads can never together pass the cap. Charges are rounded up
//! to the 2 MiB page ([`tslice_policy::ledger::charge_for`]). Over the cap the
//! call returns `CUDA_ERROR_OUT_OF_MEMORY`, exactly what a full GPU returns.
//! Releases give the charge back only after the driver has freed the memory
//! (the record is taken out before the call and put back if it fails, so an
//! address the driver reuses at once is never confused with the old one).
//!
//! A VMM allocation stays charged while any reference (its creation, each
//! `cuMemRetainAllocationHandle`) or mapping remains (`policy::vmm`); the
//! allocations of a destroyed context are given back (`context`).
//!
//! Not counted: the context's own overhead (a few hundred MiB per context on
//! real GPUs), graph memory nodes, host memory, and the legacy 32-bit entry
//! points (no runtime uses them; they pass through). A stream-ordered free
//! gives its charge back when issued, so that allocate/free/allocate on one
//! stream works as the stream-ordered allocator intends: memory whose free is
//! still queued, and what a pool keeps reserved after frees, are not counted.

use crate::hooks::{orig, real_fn};
use crate::log;
use crate::real;
use crate::records::Table;
use crate::state::{shim, Charge, DeviceState, Shim, FAIL_CLOSED};
use cuda_abi::driver_types::CUmemPoolProps;
use cuda_abi::*;
use std::ffi::{c_uint, c_void};
use tslice_policy::ledger::{array_bytes, charge_for, mipmapped_bytes};

fn flatten(r: Result<CUresult, CUresult>) -> CUresult {
    r.unwrap_or_else(|e| e)
}

/// The capped device that an allocation on `dev` is charged to, if any.
fn target(s: &Shim, dev: CUdevice) -> Result<Option<(u16, &DeviceState)>, CUresult> {
    Ok(s.mem_device(dev)?.map(|d| (dev as u16, d)))
}

/// The calling thread's context, which owns what it allocates now.
fn current_ctx() -> usize {
    real::ctx_get_current().map_or(0, |c| c as usize)
}

/// Reserves `bytes`, runs the real call, rolls back if it fails.
///
/// A request that could never fit on the device, cap or no cap (an
/// overflowing size, an absurd array) is the driver's to refuse, with the
/// driver's own error class (`CUDA_ERROR_INVALID_VALUE` for most); should
/// the driver ever grant one (managed memory can oversubscribe), `undo`
/// frees it and the caller gets out-of-memory all the same.
fn reserve_then(
    dev: &DeviceState,
    bytes: u64,
    what: &str,
    call: impl FnOnce() -> CUresult,
    undo: impl FnOnce(),
) -> CUresult {
    let s = shim();
    if let Err(d) = s.reserve_mem(dev, bytes) {
        if dev.beyond_device(bytes) {
            let r = call();
            if !r.is_success() {
                return r;
            }
            undo();
        }
        log::info!(
            "{what}: {bytes} bytes refused: {} of the {} byte cap in use",
            d.used,
            d.limit
        );
        return CUresult::ERROR_OUT_OF_MEMORY;
    }
    let r = call();
    if !r.is_success() {
        s.release_mem(dev, bytes);
    }
    r
}

fn give_back(s: &Shim, c: Charge) {
    if let Some(d) = s.devices.get(c.dev as usize) {
        s.release_mem(d, c.bytes);
    }
}

/// Frees a device pointer the shim never recorded (one the driver granted
/// beyond the cap).
fn undo_ptr(dptr: *mut CUdeviceptr) {
    if let Some(free) = orig::cuMemFree_v2() {
        // SAFETY: the driver just wrote an allocation to `dptr`, which the
        // caller passed non-null; it is freed before anyone sees it.
        unsafe { free(*dptr) };
    }
}

/// Where an allocation lives: its device, and the context that owns it (and
/// frees it when destroyed).
type Place = Result<(CUdevice, usize), CUresult>;

/// The current context and its device: where allocations without a device
/// or stream argument live.
fn current_place(_: &Shim) -> Place {
    Ok((real::current_device()?, current_ctx()))
}

/// Common path of the allocators that return one device pointer, charged
/// to the device `place` names and recorded under its context.
fn alloc_ptr(
    what: &str,
    dptr: *mut CUdeviceptr,
    size: usize,
    place: impl FnOnce(&Shim) -> Place,
    call: impl FnOnce() -> CUresult,
) -> CUresult {
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    if dptr.is_null() || size == 0 || !s.mem_on() {
        return call();
    }
    flatten((|| {
        let (dev, ctx) = place(s)?;
        let Some((dev, d)) = target(s, dev)? else {
            return Ok(call());
        };
        let bytes = charge_for(size as u64);
        let op = s.records.begin(ctx);
        let r = reserve_then(d, bytes, what, call, || undo_ptr(dptr));
        if r.is_success() {
            // SAFETY: non-null (checked) and written by the driver on success.
            op.record(Table::Ptrs, unsafe { *dptr }, Charge { dev, bytes, ctx });
        }
        Ok(r)
    })())
}

/// Common path of every free and destroy: the record of `key` is taken out
/// before the real call, and its charge given back if the call succeeds
/// (put back if it fails).
fn release_record(table: Table, key: u64, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    if !s.mem_on() || key == 0 {
        return call();
    }
    let Some(freeing) = s.records.begin_free(table, key) else {
        return call();
    };
    let charge = freeing.charge;
    let r = call();
    freeing.settle(r.is_success());
    if r.is_success() {
        give_back(s, charge);
    }
    r
}

fn free_ptr(ptr: CUdeviceptr, call: impl FnOnce() -> CUresult) -> CUresult {
    release_record(Table::Ptrs, ptr, call)
}

pub unsafe fn mem_alloc(dptr: *mut CUdeviceptr, size: usize) -> CUresult {
    let f = real_fn!(cuMemAlloc_v2);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAlloc", dptr, size, current_place, || unsafe {
        f(dptr, size)
    })
}

pub unsafe fn mem_alloc_managed(dptr: *mut CUdeviceptr, size: usize, flags: c_uint) -> CUresult {
    let f = real_fn!(cuMemAllocManaged);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocManaged", dptr, size, current_place, || unsafe {
        f(dptr, size, flags)
    })
}

/// Where a stream-ordered allocation lives: on the pool's location when a
/// pool is given and known, else on the stream's device (whose current pool
/// `cuMemAllocAsync` uses); owned by the stream's context.
fn async_place(
    pool: Option<CUmemoryPool>,
    stream: CUstream,
    per_thread: bool,
) -> impl FnOnce(&Shim) -> Place {
    move |s| {
        let dev = match pool.and_then(|p| s.pools.get(p as u64)) {
            Some(dev) => dev,
            None => s.stream_device(stream, per_thread)?,
        };
        let handle = if per_thread && stream.is_null() {
            CU_STREAM_PER_THREAD
        } else {
            stream
        };
        let ctx = match real::stream_ctx(handle) {
            Ok(c) if !c.is_null() => c as usize,
            _ => current_ctx(),
        };
        Ok((dev, ctx))
    }
}

/// Whether a stream-ordered allocation on `stream` is being captured: then
/// the driver makes a graph's allocation node, not memory, and it is
/// charged when an executable graph backs it (graphmem.rs).
fn captured(stream: CUstream, per_thread: bool) -> bool {
    let s = shim();
    if !s.captures_active() {
        return false;
    }
    let h = if per_thread && stream.is_null() {
        CU_STREAM_PER_THREAD
    } else {
        stream
    };
    // An error (an unknown stream) is no capture: the allocation is charged.
    real::stream_capture_status(h) == Some(true)
}

pub unsafe fn mem_alloc_async(dptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CUresult {
    let f = real_fn!(cuMemAllocAsync);
    if captured(stream, false) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(dptr, size, stream) };
    }
    let dev = async_place(None, stream, false);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocAsync", dptr, size, dev, || unsafe {
        f(dptr, size, stream)
    })
}

pub unsafe fn mem_alloc_async_ptsz(
    dptr: *mut CUdeviceptr,
    size: usize,
    stream: CUstream,
) -> CUresult {
    let f = real_fn!(cuMemAllocAsync_ptsz);
    if captured(stream, true) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(dptr, size, stream) };
    }
    let dev = async_place(None, stream, true);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocAsync", dptr, size, dev, || unsafe {
        f(dptr, size, stream)
    })
}

pub unsafe fn mem_alloc_from_pool_async(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    let f = real_fn!(cuMemAllocFromPoolAsync);
    if captured(stream, false) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(dptr, size, pool, stream) };
    }
    let dev = async_place(Some(pool), stream, false);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocFromPoolAsync", dptr, size, dev, || unsafe {
        f(dptr, size, pool, stream)
    })
}

pub unsafe fn mem_alloc_from_pool_async_ptsz(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    let f = real_fn!(cuMemAllocFromPoolAsync_ptsz);
    if captured(stream, true) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(dptr, size, pool, stream) };
    }
    let dev = async_place(Some(pool), stream, true);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocFromPoolAsync", dptr, size, dev, || unsafe {
        f(dptr, size, pool, stream)
    })
}

/// Where the pools of a location live for the shim: the device ordinal, or
/// -1 for host memory (which no cap counts).
fn pool_home(loc: &CUmemLocation) -> CUdevice {
    if loc.type_ == CU_MEM_LOCATION_TYPE_DEVICE {
        loc.id
    } else {
        -1
    }
}

/// Records where a pool lives, so that allocations from it are charged to
/// that device whatever stream orders them (and host pools to none).
fn remember_pool(r: CUresult, pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    if r.is_success() && !pool.is_null() {
        // SAFETY: written by the driver on success.
        shim().pools.insert(unsafe { *pool } as u64, dev);
    }
    r
}

pub unsafe fn mem_pool_create(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> CUresult {
    let f = real_fn!(cuMemPoolCreate);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(pool, props) };
    // SAFETY: read only when non-null; the API requires valid properties.
    match unsafe { props.as_ref() } {
        Some(p) => remember_pool(r, pool, pool_home(&p.location)),
        None => r,
    }
}

/// CUDA 13's pool queries by location (`cuMemGetDefaultMemPool`,
/// `cuMemGetMemPool`).
///
/// # Safety
/// `location` is NULL or points to a valid `CUmemLocation`.
unsafe fn remember_located_pool(
    r: CUresult,
    pool: *mut CUmemoryPool,
    location: *const CUmemLocation,
) -> CUresult {
    // SAFETY: the caller's contract.
    match unsafe { location.as_ref() } {
        Some(loc) => remember_pool(r, pool, pool_home(loc)),
        None => r,
    }
}

pub unsafe fn mem_get_default_mem_pool(
    pool: *mut CUmemoryPool,
    location: *mut CUmemLocation,
    ty: c_uint,
) -> CUresult {
    let f = real_fn!(cuMemGetDefaultMemPool);
    // SAFETY: the caller's arguments, passed on; the location is read as the API allows.
    unsafe { remember_located_pool(f(pool, location, ty), pool, location) }
}

pub unsafe fn mem_get_mem_pool(
    pool: *mut CUmemoryPool,
    location: *mut CUmemLocation,
    ty: c_uint,
) -> CUresult {
    let f = real_fn!(cuMemGetMemPool);
    // SAFETY: the caller's arguments, passed on; the location is read as the API allows.
    unsafe { remember_located_pool(f(pool, location, ty), pool, location) }
}

pub unsafe fn device_get_default_mem_pool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDeviceGetDefaultMemPool);
    // SAFETY: the caller's arguments, passed on.
    remember_pool(unsafe { f(pool, dev) }, pool, dev)
}

pub unsafe fn device_get_mem_pool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDeviceGetMemPool);
    // SAFETY: the caller's arguments, passed on.
    remember_pool(unsafe { f(pool, dev) }, pool, dev)
}

pub unsafe fn mem_pool_destroy(pool: CUmemoryPool) -> CUresult {
    let f = real_fn!(cuMemPoolDestroy);
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(pool) };
    if r.is_success() {
        shim().pools.remove(pool as u64);
    }
    r
}

/// Pitch alignment assumed for the reservation; the real pitch is
/// reconciled after the call.
const PITCH_ALIGN: u64 = 512;

pub unsafe fn mem_alloc_pitch(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    elem: c_uint,
) -> CUresult {
    let f = real_fn!(cuMemAllocPitch_v2);
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    // SAFETY: the caller's arguments, passed on.
    let call = || unsafe { f(dptr, pitch, width, height, elem) };
    if dptr.is_null() || pitch.is_null() || width == 0 || height == 0 || !s.mem_on() {
        return call();
    }
    flatten((|| {
        let (dev, ctx) = current_place(s)?;
        let Some((dev, d)) = target(s, dev)? else {
            return Ok(call());
        };
        let est = charge_for(
            (width as u64)
                .div_ceil(PITCH_ALIGN)
                .saturating_mul(PITCH_ALIGN)
                .saturating_mul(height as u64),
        );
        let op = s.records.begin(ctx);
        let r = reserve_then(d, est, "cuMemAllocPitch", call, || undo_ptr(dptr));
        if !r.is_success() {
            return Ok(r);
        }
        // SAFETY: both written by the driver on success.
        let (ptr, real_pitch) = unsafe { (*dptr, *pitch) };
        let actual = charge_for((real_pitch as u64).saturating_mul(height as u64));
        if actual > est && s.reserve_mem(d, actual - est).is_err() {
            s.release_mem(d, est);
            undo_ptr(dptr);
            return Ok(CUresult::ERROR_OUT_OF_MEMORY);
        }
        if actual < est {
            s.release_mem(d, est - actual);
        }
        op.record(
            Table::Ptrs,
            ptr,
            Charge {
                dev,
                bytes: actual,
                ctx,
            },
        );
        Ok(r)
    })())
}

pub unsafe fn mem_free(ptr: CUdeviceptr) -> CUresult {
    let f = real_fn!(cuMemFree_v2);
    // SAFETY: the caller's argument, passed on.
    free_ptr(ptr, || unsafe { f(ptr) })
}

pub unsafe fn mem_free_async(ptr: CUdeviceptr, stream: CUstream) -> CUresult {
    let f = real_fn!(cuMemFreeAsync);
    // SAFETY: the caller's arguments, passed on.
    free_ptr(ptr, || unsafe { f(ptr, stream) })
}

pub unsafe fn mem_free_async_ptsz(ptr: CUdeviceptr, stream: CUstream) -> CUresult {
    let f = real_fn!(cuMemFreeAsync_ptsz);
    // SAFETY: the caller's arguments, passed on.
    free_ptr(ptr, || unsafe { f(ptr, stream) })
}

pub unsafe fn mem_create(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> CUresult {
    let f = real_fn!(cuMemCreate);
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    // SAFETY: the caller's arguments, passed on.
    let call = || unsafe { f(handle, size, prop, flags) };
    if handle.is_null() || prop.is_null() || size == 0 || !s.mem_on() {
        return call();
    }
    // SAFETY: non-null; the driver API requires a valid CUmemAllocationProp.
    let loc = unsafe { (*prop).location };
    if loc.type_ != CU_MEM_LOCATION_TYPE_DEVICE {
        return call(); // host memory
    }
    flatten((|| {
        let Some((dev, d)) = target(s, loc.id)? else {
            return Ok(call());
        };
        let bytes = charge_for(size as u64);
        let mut vmm = lock_vmm(s);
        let undo = || {
            if let Some(release) = orig::cuMemRelease() {
                // SAFETY: the handle the driver just wrote (`handle` is non-null).
                unsafe { release(*handle) };
            }
        };
        let r = reserve_then(d, bytes, "cuMemCreate", call, undo);
        if r.is_success() {
            // SAFETY: written by the driver on success.
            vmm.created(unsafe { *handle }, Charge { dev, bytes, ctx: 0 });
        }
        Ok(r)
    })())
}

/// The VMM table, locked. Held across the driver call that a record
/// follows (these calls never re-enter the shim).
fn lock_vmm(s: &Shim) -> std::sync::MutexGuard<'_, tslice_policy::vmm::Vmm<Charge>> {
    s.vmm.lock().unwrap_or_else(|p| p.into_inner())
}

pub unsafe fn mem_release(handle: CUmemGenericAllocationHandle) -> CUresult {
    let f = real_fn!(cuMemRelease);
    let s = shim();
    if !s.mem_on() {
        // SAFETY: the caller's argument, passed on.
        return unsafe { f(handle) };
    }
    let mut vmm = lock_vmm(s);
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(handle) };
    if r.is_success() {
        if let Some(c) = vmm.released(handle) {
            give_back(s, c);
        }
    }
    r
}

pub unsafe fn mem_retain_allocation_handle(
    handle: *mut CUmemGenericAllocationHandle,
    addr: *mut c_void,
) -> CUresult {
    let f = real_fn!(cuMemRetainAllocationHandle);
    let s = shim();
    if !s.mem_on() || handle.is_null() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(handle, addr) };
    }
    let mut vmm = lock_vmm(s);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(handle, addr) };
    if r.is_success() {
        // SAFETY: written by the driver on success.
        vmm.retained(unsafe { *handle });
    }
    r
}

pub unsafe fn mem_map(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: u64,
) -> CUresult {
    let f = real_fn!(cuMemMap);
    let s = shim();
    if !s.mem_on() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(ptr, size, offset, handle, flags) };
    }
    let mut vmm = lock_vmm(s);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(ptr, size, offset, handle, flags) };
    if r.is_success() {
        vmm.mapped(ptr, size as u64, handle);
    }
    r
}

pub unsafe fn mem_unmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    let f = real_fn!(cuMemUnmap);
    let s = shim();
    if !s.mem_on() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(ptr, size) };
    }
    let mut vmm = lock_vmm(s);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(ptr, size) };
    if r.is_success() {
        for c in vmm.unmapped(ptr, size as u64) {
            give_back(s, c);
        }
    }
    r
}

/// Common path of the array creators; `undo` destroys an array the driver
/// granted beyond the cap.
fn create_array(
    what: &str,
    out: *mut *mut c_void,
    bytes: Option<u64>,
    call: impl FnOnce() -> CUresult,
    undo: impl FnOnce(),
) -> CUresult {
    let s = shim();
    if s.closed() {
        return FAIL_CLOSED;
    }
    let Some(bytes) = bytes.filter(|_| !out.is_null() && s.mem_on()) else {
        return call();
    };
    flatten((|| {
        let (dev, ctx) = current_place(s)?;
        let Some((dev, d)) = target(s, dev)? else {
            return Ok(call());
        };
        let bytes = charge_for(bytes);
        let op = s.records.begin(ctx);
        let r = reserve_then(d, bytes, what, call, undo);
        if r.is_success() {
            // SAFETY: non-null (checked) and written by the driver on success.
            op.record(
                Table::Arrays,
                unsafe { *out } as u64,
                Charge { dev, bytes, ctx },
            );
        }
        Ok(r)
    })())
}

pub unsafe fn array_create(array: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult {
    let f = real_fn!(cuArrayCreate_v2);
    // SAFETY: read only when non-null; the API requires a valid descriptor.
    let bytes = unsafe { desc.as_ref() }.map(|d| {
        array_bytes(
            d.Width as u64,
            d.Height as u64,
            1,
            d.NumChannels as u64,
            array_format_bytes(d.Format),
        )
    });
    // SAFETY: the caller's arguments, passed on; the undo destroys the
    // array the driver just wrote to the non-null `array`.
    create_array(
        "cuArrayCreate",
        array,
        bytes,
        || unsafe { f(array, desc) },
        || unsafe { undo_array(*array) },
    )
}

pub unsafe fn array3d_create(
    array: *mut CUarray,
    desc: *const CUDA_ARRAY3D_DESCRIPTOR,
) -> CUresult {
    let f = real_fn!(cuArray3DCreate_v2);
    // SAFETY: read only when non-null; the API requires a valid descriptor.
    let bytes = unsafe { desc.as_ref() }.map(|d| {
        array_bytes(
            d.Width as u64,
            d.Height as u64,
            d.Depth as u64,
            d.NumChannels as u64,
            array_format_bytes(d.Format),
        )
    });
    // SAFETY: as in array_create.
    create_array(
        "cuArray3DCreate",
        array,
        bytes,
        || unsafe { f(array, desc) },
        || unsafe { undo_array(*array) },
    )
}

pub unsafe fn mipmapped_array_create(
    array: *mut CUmipmappedArray,
    desc: *const CUDA_ARRAY3D_DESCRIPTOR,
    levels: c_uint,
) -> CUresult {
    let f = real_fn!(cuMipmappedArrayCreate);
    // SAFETY: read only when non-null; the API requires a valid descriptor.
    let bytes = unsafe { desc.as_ref() }.map(|d| {
        mipmapped_bytes(
            d.Width as u64,
            d.Height as u64,
            d.Depth as u64,
            levels,
            d.NumChannels as u64,
            array_format_bytes(d.Format),
        )
    });
    let undo = || {
        if let Some(destroy) = orig::cuMipmappedArrayDestroy() {
            // SAFETY: the array the driver just wrote to the non-null `array`.
            unsafe { destroy(*array) };
        }
    };
    // SAFETY: the caller's arguments, passed on.
    create_array(
        "cuMipmappedArrayCreate",
        array,
        bytes,
        || unsafe { f(array, desc, levels) },
        undo,
    )
}

/// Destroys an array the shim never recorded.
///
/// # Safety
/// `array` is an array the driver just created.
unsafe fn undo_array(array: CUarray) {
    if let Some(destroy) = orig::cuArrayDestroy() {
        // SAFETY: the caller's contract.
        unsafe { destroy(array) };
    }
}

fn destroy_array(handle: u64, call: impl FnOnce() -> CUresult) -> CUresult {
    release_record(Table::Arrays, handle, call)
}

pub unsafe fn array_destroy(array: CUarray) -> CUresult {
    let f = real_fn!(cuArrayDestroy);
    // SAFETY: the caller's argument, passed on.
    destroy_array(array as u64, || unsafe { f(array) })
}

pub unsafe fn mipmapped_array_destroy(array: CUmipmappedArray) -> CUresult {
    let f = real_fn!(cuMipmappedArrayDestroy);
    // SAFETY: the caller's argument, passed on.
    destroy_array(array as u64, || unsafe { f(array) })
}

/// `cuMemGetInfo`: on a capped device, the cap is the total and the free
/// space is what is left under it (and never more than the device has free).
/// The driver validates the call first (no context, NULL pointers), so its
/// errors are its own.
pub unsafe fn mem_get_info(free: *mut usize, total: *mut usize) -> CUresult {
    let f = real_fn!(cuMemGetInfo_v2);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(free, total) };
    let s = shim();
    if !r.is_success() || free.is_null() || total.is_null() || !s.mem_on() {
        return r;
    }
    if let Ok(Some((_, d))) = real::current_device().and_then(|dev| target(s, dev)) {
        let cap = s.mem_limit_shown(d);
        // SAFETY: valid out-pointers (non-null), written by the driver.
        unsafe {
            *total = (*total).min(cap as usize);
            *free = (*free).min(s.mem_available(d) as usize).min(*total);
        }
    }
    r
}

/// `cuDeviceTotalMem`: a capped device reports its cap.
pub unsafe fn device_total_mem(bytes: *mut usize, dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDeviceTotalMem_v2);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(bytes, dev) };
    let s = shim();
    if !r.is_success() || bytes.is_null() || !s.mem_on() {
        return r;
    }
    if let Ok(Some((_, d))) = target(s, dev) {
        // SAFETY: a valid out-pointer (non-null), written by the driver.
        unsafe { *bytes = (*bytes).min(s.mem_limit_shown(d) as usize) };
    }
    r
}

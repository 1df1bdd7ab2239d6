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
use crate::state::{shim, Charge, DeviceState, ShardedMap, Shim, FAIL_CLOSED};
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

/// The capped current device, if any (allocations without a device argument
/// go to the current context's device).
fn current_target(s: &Shim) -> Result<Option<(u16, &DeviceState)>, CUresult> {
    if !s.mem_on() {
        return Ok(None);
    }
    target(s, real::current_device()?)
}

/// Reserves `bytes`, runs the real call, rolls back if it fails.
fn reserve_then(dev: &DeviceState, bytes: u64, what: &str, call: impl FnOnce() -> CUresult) -> CUresult {
    if let Err(d) = dev.ledger.try_reserve(bytes) {
        log::info!(
            "{what}: {bytes} bytes refused: {} of the {} byte cap in use",
            d.used, d.limit
        );
        return CUresult::ERROR_OUT_OF_MEMORY;
    }
    let r = call();
    if !r.is_success() {
        dev.ledger.release(bytes);
    }
    r
}

fn give_back(s: &Shim, c: Charge) {
    if let Some(d) = s.devices.get(c.dev as usize) {
        d.ledger.release(c.bytes);
    }
}

/// Common path of the allocators that return one device pointer.
fn alloc_ptr(what: &str, dptr: *mut CUdeviceptr, size: usize, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    if s.fail_closed {
        return FAIL_CLOSED;
    }
    if dptr.is_null() || size == 0 {
        return call();
    }
    flatten((|| {
        let Some((dev, d)) = current_target(s)? else { return Ok(call()) };
        let bytes = charge_for(size as u64);
        let r = reserve_then(d, bytes, what, call);
        if r.is_success() {
            // SAFETY: non-null (checked) and written by the driver on success.
            s.ptrs.insert(unsafe { *dptr }, Charge { dev, bytes, ctx: current_ctx() });
        }
        Ok(r)
    })())
}

/// Common path of every free and destroy: the record of `key` in `table`
/// is taken out before the real call and given back if it succeeds, put
/// back if it fails.
fn release_record(
    table: impl Fn(&Shim) -> &ShardedMap<Charge>,
    key: u64,
    call: impl FnOnce() -> CUresult,
) -> CUresult {
    let s = shim();
    if !s.mem_on() || key == 0 {
        return call();
    }
    let c = table(s).remove(key);
    let r = call();
    match c {
        Some(c) if r.is_success() => give_back(s, c),
        Some(c) => table(s).insert(key, c),
        None => {}
    }
    r
}

fn free_ptr(ptr: CUdeviceptr, call: impl FnOnce() -> CUresult) -> CUresult {
    release_record(|s| &s.ptrs, ptr, call)
}

pub unsafe fn mem_alloc(dptr: *mut CUdeviceptr, size: usize) -> CUresult {
    let f = real_fn!(cuMemAlloc_v2);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAlloc", dptr, size, || unsafe { f(dptr, size) })
}

pub unsafe fn mem_alloc_managed(dptr: *mut CUdeviceptr, size: usize, flags: c_uint) -> CUresult {
    let f = real_fn!(cuMemAllocManaged);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocManaged", dptr, size, || unsafe { f(dptr, size, flags) })
}

pub unsafe fn mem_alloc_async(dptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CUresult {
    let f = real_fn!(cuMemAllocAsync);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocAsync", dptr, size, || unsafe { f(dptr, size, stream) })
}

pub unsafe fn mem_alloc_async_ptsz(dptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CUresult {
    let f = real_fn!(cuMemAllocAsync_ptsz);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocAsync", dptr, size, || unsafe { f(dptr, size, stream) })
}

pub unsafe fn mem_alloc_from_pool_async(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    let f = real_fn!(cuMemAllocFromPoolAsync);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocFromPoolAsync", dptr, size, || unsafe { f(dptr, size, pool, stream) })
}

pub unsafe fn mem_alloc_from_pool_async_ptsz(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    let f = real_fn!(cuMemAllocFromPoolAsync_ptsz);
    // SAFETY: the caller's arguments, passed on.
    alloc_ptr("cuMemAllocFromPoolAsync", dptr, size, || unsafe { f(dptr, size, pool, stream) })
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
    if s.fail_closed {
        return FAIL_CLOSED;
    }
    // SAFETY: the caller's arguments, passed on.
    let call = || unsafe { f(dptr, pitch, width, height, elem) };
    if dptr.is_null() || pitch.is_null() || width == 0 || height == 0 {
        return call();
    }
    flatten((|| {
        let Some((dev, d)) = current_target(s)? else { return Ok(call()) };
        let est = charge_for(
            (width as u64).div_ceil(PITCH_ALIGN).saturating_mul(PITCH_ALIGN).saturating_mul(height as u64),
        );
        let r = reserve_then(d, est, "cuMemAllocPitch", call);
        if !r.is_success() {
            return Ok(r);
        }
        // SAFETY: both written by the driver on success.
        let (ptr, real_pitch) = unsafe { (*dptr, *pitch) };
        let actual = charge_for((real_pitch as u64).saturating_mul(height as u64));
        if actual > est && d.ledger.try_reserve(actual - est).is_err() {
            d.ledger.release(est);
            if let Some(free) = orig::cuMemFree_v2() {
                // SAFETY: frees the allocation just made.
                unsafe { free(ptr) };
            }
            return Ok(CUresult::ERROR_OUT_OF_MEMORY);
        }
        if actual < est {
            d.ledger.release(est - actual);
        }
        s.ptrs.insert(ptr, Charge { dev, bytes: actual, ctx: current_ctx() });
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
    if s.fail_closed {
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
        let Some((dev, d)) = target(s, loc.id)? else { return Ok(call()) };
        let bytes = charge_for(size as u64);
        let mut vmm = lock_vmm(s);
        let r = reserve_then(d, bytes, "cuMemCreate", call);
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

pub unsafe fn mem_retain_allocation_handle(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void) -> CUresult {
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

/// Common path of the array creators.
fn create_array(what: &str, out: *mut *mut c_void, bytes: Option<u64>, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    if s.fail_closed {
        return FAIL_CLOSED;
    }
    let Some(bytes) = bytes.filter(|_| !out.is_null()) else { return call() };
    flatten((|| {
        let Some((dev, d)) = current_target(s)? else { return Ok(call()) };
        let bytes = charge_for(bytes);
        let r = reserve_then(d, bytes, what, call);
        if r.is_success() {
            // SAFETY: non-null (checked) and written by the driver on success.
            s.arrays.insert(unsafe { *out } as u64, Charge { dev, bytes, ctx: current_ctx() });
        }
        Ok(r)
    })())
}

pub unsafe fn array_create(array: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult {
    let f = real_fn!(cuArrayCreate_v2);
    // SAFETY: read only when non-null; the API requires a valid descriptor.
    let bytes = unsafe { desc.as_ref() }.map(|d| {
        array_bytes(d.Width as u64, d.Height as u64, 1, d.NumChannels as u64, array_format_bytes(d.Format))
    });
    // SAFETY: the caller's arguments, passed on.
    create_array("cuArrayCreate", array, bytes, || unsafe { f(array, desc) })
}

pub unsafe fn array3d_create(array: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) -> CUresult {
    let f = real_fn!(cuArray3DCreate_v2);
    // SAFETY: read only when non-null; the API requires a valid descriptor.
    let bytes = unsafe { desc.as_ref() }.map(|d| {
        array_bytes(d.Width as u64, d.Height as u64, d.Depth as u64, d.NumChannels as u64, array_format_bytes(d.Format))
    });
    // SAFETY: the caller's arguments, passed on.
    create_array("cuArray3DCreate", array, bytes, || unsafe { f(array, desc) })
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
    // SAFETY: the caller's arguments, passed on.
    create_array("cuMipmappedArrayCreate", array, bytes, || unsafe { f(array, desc, levels) })
}

fn destroy_array(handle: u64, call: impl FnOnce() -> CUresult) -> CUresult {
    release_record(|s| &s.arrays, handle, call)
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
pub unsafe fn mem_get_info(free: *mut usize, total: *mut usize) -> CUresult {
    let f = real_fn!(cuMemGetInfo_v2);
    if free.is_null() || total.is_null() {
        return CUresult::ERROR_INVALID_VALUE;
    }
    // SAFETY: valid out-pointers (checked non-null).
    let r = unsafe { f(free, total) };
    let s = shim();
    if !r.is_success() || !s.mem_on() {
        return r;
    }
    if let Ok(Some((_, d))) = current_target(s) {
        let cap = d.ledger.limit();
        // SAFETY: valid out-pointers, written by the driver.
        unsafe {
            *total = (*total).min(cap as usize);
            *free = (*free).min(d.ledger.available() as usize);
        }
    }
    r
}

/// `cuDeviceTotalMem`: a capped device reports its cap.
pub unsafe fn device_total_mem(bytes: *mut usize, dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDeviceTotalMem_v2);
    if bytes.is_null() {
        return CUresult::ERROR_INVALID_VALUE;
    }
    // SAFETY: a valid out-pointer (checked non-null).
    let r = unsafe { f(bytes, dev) };
    let s = shim();
    if !r.is_success() || !s.mem_on() {
        return r;
    }
    if let Ok(Some((_, d))) = target(s, dev) {
        // SAFETY: a valid out-pointer, written by the driver.
        unsafe { *bytes = (*bytes).min(d.ledger.limit() as usize) };
    }
    r
}

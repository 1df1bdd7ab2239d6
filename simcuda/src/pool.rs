//! Stream-ordered allocation and memory pools. Allocations are charged to
//! the ledger at `cuMemAllocAsync` and returned at `cuMemFreeAsync`: pools
//! here retain nothing, whatever their release threshold.

use crate::entry::{out, read, slice, Res, INVALID_VALUE};
use crate::memory::{self, Kind};
use crate::process::{self, handle_of, Handle, Magic, Process};
use crate::stream::{self, DefaultStream};
use cuda_abi::driver_types::{mempool_attr, CUmemAccessDesc, CUmemPoolProps};
use cuda_abi::{
    CUdeviceptr, CUmemLocation, CUmemoryPool, CUresult, CUstream, CU_MEM_LOCATION_TYPE_DEVICE,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Pool {
    magic: Magic,
    pub device: i32,
    pub is_default: bool,
    attrs: Mutex<HashMap<u32, u64>>,
    access: Mutex<HashMap<i32, u32>>,
    used: AtomicU64,
    used_high: AtomicU64,
    /// `CUmemAllocationHandleType`s it can be shared with (its properties).
    pub handle_types: u32,
    /// Imported from another process: it names that process's memory, and
    /// nothing can be allocated from it here.
    pub imported: bool,
    /// The descriptor handed out by `cuMemPoolExportToShareableHandle`.
    token: Mutex<Option<i32>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(fd) = self
            .token
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // SAFETY: closing the pool's own descriptor.
            unsafe { libc::close(fd) };
        }
    }
}

impl Handle for Pool {
    const MAGIC: u32 = 0x9001_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl Pool {
    pub fn note_alloc(&self, bytes: u64) {
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.used_high.fetch_max(now, Ordering::AcqRel);
    }
    pub fn note_free(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

pub fn create(p: &Process, device: i32, props: Option<&CUmemPoolProps>) -> Arc<Pool> {
    let mut attrs = HashMap::new();
    attrs.insert(mempool_attr::REUSE_FOLLOW_EVENT_DEPENDENCIES, 1);
    attrs.insert(mempool_attr::REUSE_ALLOW_OPPORTUNISTIC, 1);
    attrs.insert(mempool_attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES, 1);
    attrs.insert(mempool_attr::RELEASE_THRESHOLD, 0);
    let mut access = HashMap::new();
    access.insert(
        device,
        cuda_abi::driver_types::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
    );
    p.pools.insert(Pool {
        magic: Magic::new(Pool::MAGIC),
        device,
        is_default: props.is_none(),
        attrs: Mutex::new(attrs),
        access: Mutex::new(access),
        used: AtomicU64::new(0),
        used_high: AtomicU64::new(0),
        handle_types: props.map_or(0, |p| p.handleTypes),
        imported: false,
        token: Mutex::new(None),
    })
}

fn alloc_async(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: Option<CUmemoryPool>,
    h: CUstream,
    ds: DefaultStream,
) -> Res {
    let p = process::initialized()?;
    let s = stream::resolve(h, ds)?;
    if dptr.is_null() || size == 0 {
        return Err(INVALID_VALUE);
    }
    if s.capturing() {
        // Captured: a memory-allocation node on the pool's device.
        let device = match pool {
            Some(h) => {
                let pl = p.pools.get(h)?;
                if pl.imported {
                    return Err(INVALID_VALUE);
                }
                pl.device
            }
            None => s.ctx.device,
        };
        let b = crate::capture::add_alloc(&s, device, size as u64)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        return unsafe { out(dptr, b) };
    }
    // cuMemAllocAsync allocates from the current pool of the stream's
    // device; a pool given explicitly may be located on another device, and
    // its memory lives there (ordered by the stream).
    let pl = match pool {
        Some(h) => p.pools.get(h)?,
        None => p.device(s.ctx.device)?.current_pool(p),
    };
    if pl.imported {
        return Err(INVALID_VALUE);
    }
    let b = memory::alloc_on(
        p,
        &s.ctx,
        pl.device,
        size as u64,
        size as u64,
        Kind::Async(handle_of(&pl) as usize),
    )?;
    pl.note_alloc(memory::charge_for(size as u64));
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(dptr, b) }
}

export_pt! {
    fn cuMemAllocAsync / cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, size: usize, h: CUstream) |ds| {
        alloc_async(dptr, size, None, h, ds)
    }
}

export_pt! {
    fn cuMemAllocFromPoolAsync / cuMemAllocFromPoolAsync_ptsz(dptr: *mut CUdeviceptr, size: usize, pool: CUmemoryPool, h: CUstream) |ds| {
        alloc_async(dptr, size, Some(pool), h, ds)
    }
}

export_pt! {
    fn cuMemFreeAsync / cuMemFreeAsync_ptsz(dptr: CUdeviceptr, h: CUstream) |ds| {
        let p = process::initialized()?;
        let s = stream::resolve(h, ds)?;
        if s.capturing() {
            // Graph memory is freed by a memory-free node; other memory
            // cannot be freed inside a capture.
            if crate::graph::is_graph_alloc(p, dptr) {
                return crate::capture::add_free(&s, dptr);
            }
            crate::capture::invalidate(&s);
            return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        if crate::graph::free_outside(p, dptr) {
            // Graph memory freed outside its graph: it stays with the
            // graph's pool until trimmed, as CUDA keeps it.
            return Ok(());
        }
        let a = memory::free(p, dptr, |k| matches!(k, Kind::Async(_) | Kind::Device | Kind::Pitch | Kind::Managed | Kind::PoolImport))?;
        if let Kind::Async(pool) = a.kind {
            if let Ok(pl) = p.pools.get(pool as *mut c_void) {
                pl.note_free(a.charged);
            }
        }
        Ok(())
    }
}

export! {
    fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) {
        let p = process::initialized()?;
        // SAFETY: caller's properties struct.
        let pr = unsafe { read(props)? };
        if pool.is_null() || pr.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE || pr.allocType != 1 {
            return Err(INVALID_VALUE);
        }
        p.device(pr.location.id)?;
        let pl = create(p, pr.location.id, Some(&pr));
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(pool, handle_of(&pl)) }
    }
}

export! {
    fn cuMemPoolDestroy(pool: CUmemoryPool) {
        let p = process::initialized()?;
        let pl = p.pools.get(pool)?;
        if pl.is_default {
            return Err(INVALID_VALUE);
        }
        p.pools.remove(pool)?;
        Ok(())
    }
}

export! {
    /// Nothing is retained after frees here, so there is never anything to trim.
    fn cuMemPoolTrimTo(pool: CUmemoryPool, min_bytes: usize) {
        let _ = min_bytes;
        process::initialized()?.pools.get(pool)?;
        Ok(())
    }
}

export! {
    fn cuMemPoolSetAttribute(pool: CUmemoryPool, attr: u32, value: *mut c_void) {
        let pl = process::initialized()?.pools.get(pool)?;
        match attr {
            mempool_attr::REUSE_FOLLOW_EVENT_DEPENDENCIES..=mempool_attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                // SAFETY: an int, per the attribute's documented type.
                let v = unsafe { read(value.cast::<i32>())? };
                pl.attrs.lock().unwrap_or_else(|e| e.into_inner()).insert(attr, v as u64);
            }
            mempool_attr::RELEASE_THRESHOLD => {
                // SAFETY: a cuuint64_t, per the attribute's documented type.
                let v = unsafe { read(value.cast::<u64>())? };
                pl.attrs.lock().unwrap_or_else(|e| e.into_inner()).insert(attr, v);
            }
            mempool_attr::RESERVED_MEM_HIGH | mempool_attr::USED_MEM_HIGH => {
                // SAFETY: a cuuint64_t; only 0 (reset the high-water mark) is accepted.
                if unsafe { read(value.cast::<u64>())? } != 0 {
                    return Err(INVALID_VALUE);
                }
                pl.used_high.store(pl.used.load(Ordering::Acquire), Ordering::Release);
            }
            _ => return Err(INVALID_VALUE),
        }
        Ok(())
    }
}

export! {
    fn cuMemPoolGetAttribute(pool: CUmemoryPool, attr: u32, value: *mut c_void) {
        let pl = process::initialized()?.pools.get(pool)?;
        let used = pl.used.load(Ordering::Acquire);
        let high = pl.used_high.load(Ordering::Acquire);
        // SAFETY (writes): `value` points to the attribute's documented type.
        unsafe {
            match attr {
                mempool_attr::REUSE_FOLLOW_EVENT_DEPENDENCIES..=mempool_attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                    let v = pl.attrs.lock().unwrap_or_else(|e| e.into_inner()).get(&attr).copied().unwrap_or(0);
                    out(value.cast::<i32>(), v as i32)
                }
                mempool_attr::RELEASE_THRESHOLD => {
                    let v = pl.attrs.lock().unwrap_or_else(|e| e.into_inner()).get(&attr).copied().unwrap_or(0);
                    out(value.cast::<u64>(), v)
                }
                mempool_attr::RESERVED_MEM_CURRENT | mempool_attr::USED_MEM_CURRENT => out(value.cast::<u64>(), used),
                mempool_attr::RESERVED_MEM_HIGH | mempool_attr::USED_MEM_HIGH => out(value.cast::<u64>(), high),
                _ => Err(INVALID_VALUE),
            }
        }
    }
}

export! {
    fn cuMemPoolSetAccess(pool: CUmemoryPool, desc: *const CUmemAccessDesc, count: usize) {
        let p = process::initialized()?;
        let pl = p.pools.get(pool)?;
        // SAFETY: caller's array of `count` descriptors.
        let d = unsafe { slice(desc, count)? };
        for x in d {
            if x.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE || x.flags > 3 || x.flags == 2 {
                return Err(INVALID_VALUE);
            }
            p.device(x.location.id)?;
        }
        let mut a = pl.access.lock().unwrap_or_else(|e| e.into_inner());
        for x in d {
            a.insert(x.location.id, x.flags);
        }
        Ok(())
    }
}

export! {
    fn cuMemPoolGetAccess(flags: *mut u32, pool: CUmemoryPool, location: *const CUmemLocation) {
        let pl = process::initialized()?.pools.get(pool)?;
        // SAFETY: caller's location struct.
        let loc = unsafe { read(location)? };
        let f = pl.access.lock().unwrap_or_else(|e| e.into_inner()).get(&loc.id).copied().unwrap_or(0);
        // SAFETY: caller's output pointer.
        unsafe { out(flags, f) }
    }
}

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
const POSIX_FD: u32 = 1;
/// The memfd name of an exported pool, followed by the device ordinal.
const POOL_PREFIX: &str = "simcuda-pool-dev";

export! {
    /// A pool made with POSIX descriptors among its handle types is shared
    /// as a descriptor naming it; its allocations are then shared one by
    /// one (`cuMemPoolExportPointer`).
    fn cuMemPoolExportToShareableHandle(handle: *mut c_void, pool: CUmemoryPool, ty: u32, flags: u64) {
        let p = process::initialized()?;
        let pl = p.pools.get(pool)?;
        if handle.is_null() || flags != 0 || pl.imported {
            return Err(INVALID_VALUE);
        }
        if ty != POSIX_FD {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        if pl.handle_types & POSIX_FD == 0 {
            return Err(INVALID_VALUE);
        }
        let mut tok = pl.token.lock().unwrap_or_else(|e| e.into_inner());
        let fd = match *tok {
            Some(fd) => fd,
            None => {
                let name = std::ffi::CString::new(format!("{POOL_PREFIX}{}", pl.device)).map_err(|_| INVALID_VALUE)?;
                // SAFETY: a new anonymous file; the name is NUL-terminated.
                let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(CUresult::ERROR_OUT_OF_MEMORY);
                }
                *tok = Some(fd);
                fd
            }
        };
        // SAFETY: duplicates the pool's descriptor; the copy is the caller's.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: for POSIX descriptors the shareable handle is an int.
        unsafe { out(handle.cast::<i32>(), dup) }
    }
}

export! {
    fn cuMemPoolImportFromShareableHandle(pool: *mut CUmemoryPool, handle: *mut c_void, ty: u32, flags: u64) {
        let p = process::initialized()?;
        if pool.is_null() || flags != 0 {
            return Err(INVALID_VALUE);
        }
        if ty != POSIX_FD {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        let fd = i32::try_from(handle as usize).map_err(|_| INVALID_VALUE)?;
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| INVALID_VALUE)?;
        let device: i32 = link
            .to_str()
            .and_then(|l| l.strip_prefix("/memfd:"))
            .and_then(|l| l.strip_prefix(POOL_PREFIX))
            .and_then(|l| l.split(' ').next())
            .and_then(|d| d.parse().ok())
            .ok_or(INVALID_VALUE)?;
        p.device(device)?;
        let pl = p.pools.insert(Pool {
            magic: Magic::new(Pool::MAGIC),
            device,
            is_default: false,
            attrs: Mutex::new(HashMap::new()),
            access: Mutex::new(HashMap::new()),
            used: AtomicU64::new(0),
            used_high: AtomicU64::new(0),
            handle_types: POSIX_FD,
            imported: true,
            token: Mutex::new(None),
        });
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(pool, handle_of(&pl)) }
    }
}

export! {
    /// The 64 bytes another process needs to map one allocation of an
    /// exportable pool (see `ipc`: the allocation's pages move into a memfd).
    fn cuMemPoolExportPointer(data: *mut crate::ipc::IpcMemHandle, ptr: CUdeviceptr) {
        let p = process::initialized()?;
        if data.is_null() {
            return Err(INVALID_VALUE);
        }
        let a = p.mem.get(ptr).ok_or(INVALID_VALUE)?;
        let Kind::Async(pool) = a.kind else { return Err(INVALID_VALUE) };
        let pl = p.pools.get(pool as *mut c_void)?;
        if pl.handle_types & POSIX_FD == 0 {
            return Err(INVALID_VALUE);
        }
        let h = crate::ipc::export(p, &a)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(data, h) }
    }
}

export! {
    /// Maps an allocation of an imported pool; freed with `cuMemFree(Async)`
    /// here, which unmaps it (the owner's charge is the owner's).
    fn cuMemPoolImportPointer(dptr: *mut CUdeviceptr, pool: CUmemoryPool, data: *mut crate::ipc::IpcMemHandle) {
        let p = process::initialized()?;
        let pl = p.pools.get(pool)?;
        if dptr.is_null() || !pl.imported {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the caller's export data.
        let h = unsafe { read(data)? };
        let b = crate::ipc::import(p, &h, Kind::PoolImport)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(dptr, b) }
    }
}

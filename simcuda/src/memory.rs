//! Device memory: the allocation table (every device range this process
//! can name), allocation and free with ledger charges, host memory, memory
//! info, pointer attributes, address ranges.

use crate::context::{self, Ctx};
use crate::entry::{out, slice, Res, INVALID_VALUE};
use crate::process::{self, handle_of, Process};
use cuda_abi::driver_types::{memorytype, pointer_attr};
use cuda_abi::{CUdeviceptr, CUdeviceptr_v1, CUresult};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// The ledger's page: every device allocation is charged in whole 2 MiB units.
pub const PAGE: u64 = 2 << 20;

/// Rounds a byte count up to the ledger's 2 MiB granularity (at least one page).
pub fn charge_for(bytes: u64) -> u64 {
    bytes.max(1).div_ceil(PAGE).saturating_mul(PAGE)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Device,
    Pitch,
    Managed,
    /// From a memory pool (`cuMemAllocAsync`); the pool's handle.
    Async(usize),
    /// Legacy 32-bit `cuMemAlloc`, below 4 GiB.
    Legacy32,
    /// A `__device__` variable of a loaded module (not charged).
    Global,
    /// A VMM mapping (charged through its physical allocation).
    Vmm,
    /// A graph allocation node's memory while an executable graph backs it
    /// (charged through the graph, see `graph`).
    Graph,
    /// Memory opened from another process's IPC handle (charged to its owner).
    Ipc,
    /// An allocation of another process's pool, imported (charged to its owner).
    PoolImport,
}

#[derive(Clone, Debug)]
pub struct Alloc {
    pub base: u64,
    pub size: u64,
    /// Bytes mapped at `base` (what munmap releases; 0 for VMM mappings).
    pub mapped: usize,
    /// Bytes charged to the ledger (returned on free).
    pub charged: u64,
    pub device: i32,
    pub ctx: usize,
    pub ctx_id: u64,
    pub kind: Kind,
}

/// Every device range of this process, by base address.
pub struct Table {
    map: Mutex<BTreeMap<u64, Alloc>>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            map: Mutex::new(BTreeMap::new()),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Alloc>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn insert(&self, a: Alloc) {
        self.lock().insert(a.base, a);
    }
    pub fn remove(&self, base: u64) -> Option<Alloc> {
        self.lock().remove(&base)
    }
    pub fn get(&self, base: u64) -> Option<Alloc> {
        self.lock().get(&base).cloned()
    }
    /// The allocation containing `ptr`.
    pub fn find(&self, ptr: u64) -> Option<Alloc> {
        let m = self.lock();
        let (_, a) = m.range(..=ptr).next_back()?;
        (ptr < a.base + a.size.max(1)).then(|| a.clone())
    }
    /// Whether `[ptr, ptr+len)` is covered by device allocations (adjacent
    /// VMM mappings may cover it together).
    pub fn covers(&self, ptr: u64, len: u64) -> bool {
        let m = self.lock();
        let end = match ptr.checked_add(len) {
            Some(e) => e,
            None => return false,
        };
        let mut at = ptr;
        loop {
            let Some((_, a)) = m.range(..=at).next_back() else {
                return false;
            };
            let a_end = a.base + a.size;
            if at >= a_end {
                return false;
            }
            if end <= a_end {
                return true;
            }
            at = a_end;
        }
    }
    pub fn take_where(&self, f: impl Fn(&Alloc) -> bool) -> Vec<Alloc> {
        let mut m = self.lock();
        let keys: Vec<u64> = m.values().filter(|a| f(a)).map(|a| a.base).collect();
        keys.into_iter().filter_map(|k| m.remove(&k)).collect()
    }
}

/// Validates a device range for a copy or memset.
pub fn check_device(p: &Process, ptr: u64, len: u64) -> Res {
    if len == 0 {
        return Ok(());
    }
    if p.mem.covers(ptr, len) || p.host.covers(ptr, len) {
        Ok(())
    } else {
        Err(INVALID_VALUE)
    }
}

/// Anonymous, lazily backed memory.
pub fn map_anon(len: usize, low32: bool) -> Res<*mut c_void> {
    let extra = if low32 { libc::MAP_32BIT } else { 0 };
    // SAFETY: a fresh mapping (no address given); no existing memory is affected.
    unsafe { anon(0, len, libc::PROT_READ | libc::PROT_WRITE, extra) }
}

/// An inaccessible address range, for memory mapped into it later (VMM
/// reservations, graph allocations).
pub fn reserve(len: usize) -> Res<u64> {
    // SAFETY: a fresh mapping (no address given); no existing memory is affected.
    unsafe { anon(0, len, libc::PROT_NONE, 0) }.map(|p| p as u64)
}

/// Fresh readable, writable memory over `[base, base+len)`.
///
/// # Safety
/// The range is this driver's own (a reservation or mapping it made).
pub unsafe fn map_fixed(base: u64, len: usize) -> Res {
    // SAFETY: per the function contract.
    unsafe {
        anon(
            base,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED,
        )
    }
    .map(|_| ())
}

/// Turns `[base, base+len)` back into an inaccessible reservation.
///
/// # Safety
/// The range is this driver's own (a reservation or mapping it made).
pub unsafe fn to_reservation(base: u64, len: usize) -> Res {
    // SAFETY: per the function contract.
    unsafe { anon(base, len, libc::PROT_NONE, libc::MAP_FIXED) }.map(|_| ())
}

/// # Safety
/// With MAP_FIXED in `extra`, `[addr, addr+len)` is this driver's own.
unsafe fn anon(addr: u64, len: usize, prot: i32, extra: i32) -> Res<*mut c_void> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra;
    // SAFETY: per the function contract (no address: a fresh range).
    let p = unsafe { libc::mmap(addr as *mut c_void, len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(CUresult::ERROR_OUT_OF_MEMORY);
    }
    Ok(p)
}

pub fn unmap(base: u64, len: usize) {
    if len > 0 {
        // SAFETY: unmaps a range this driver mapped itself and no longer hands out.
        unsafe { libc::munmap(base as *mut c_void, len) };
    }
}

/// Charges the ledger and maps backing memory for a device allocation.
pub fn alloc(p: &Process, ctx: &Arc<Ctx>, size: u64, charge_bytes: u64, kind: Kind) -> Res<u64> {
    alloc_on(p, ctx, ctx.device, size, charge_bytes, kind)
}

/// As [`alloc`], on `device` rather than the context's own (a stream-ordered
/// allocation from a pool located on another device).
pub fn alloc_on(
    p: &Process,
    ctx: &Arc<Ctx>,
    device: i32,
    size: u64,
    charge_bytes: u64,
    kind: Kind,
) -> Res<u64> {
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let gone = ctx.memory_gone.read().unwrap_or_else(|e| e.into_inner());
    if *gone {
        return Err(CUresult::ERROR_INVALID_CONTEXT);
    }
    let dev = p.device(device)?;
    let charged = charge_for(charge_bytes);
    let mapped = usize::try_from(charged).map_err(|_| CUresult::ERROR_OUT_OF_MEMORY)?;
    dev.sim
        .mem_charge(charged)
        .map_err(|_| CUresult::ERROR_OUT_OF_MEMORY)?;
    let base = match map_anon(mapped, kind == Kind::Legacy32) {
        Ok(b) => b as u64,
        Err(e) => {
            dev.sim.mem_uncharge(charged);
            return Err(e);
        }
    };
    p.mem.insert(Alloc {
        base,
        size,
        mapped,
        charged,
        device,
        ctx: handle_of(ctx) as usize,
        ctx_id: ctx.id,
        kind,
    });
    Ok(base)
}

/// Unmaps an allocation and returns its charge to the ledger.
pub fn release(p: &Process, a: &Alloc) {
    crate::ipc::forget(p, a);
    unmap(a.base, a.mapped);
    if a.charged > 0 {
        if let Ok(d) = p.device(a.device) {
            d.sim.mem_uncharge(a.charged);
        }
    }
}

/// Frees an allocation made by one of the `accept`ed kinds.
pub fn free(p: &Process, ptr: u64, accept: impl Fn(Kind) -> bool) -> Res<Alloc> {
    let a = p
        .mem
        .get(ptr)
        .filter(|a| accept(a.kind))
        .ok_or(INVALID_VALUE)?;
    let a = p.mem.remove(a.base).ok_or(INVALID_VALUE)?;
    release(p, &a);
    Ok(a)
}

/// Frees everything a destroyed context owned.
pub fn free_context(p: &Process, c: &Ctx) {
    for a in p
        .mem
        .take_where(|a| a.ctx_id == c.id && !matches!(a.kind, Kind::Vmm | Kind::Graph))
    {
        release(p, &a);
        if let Kind::Async(pool) = a.kind {
            if let Ok(pl) = p.pools.get(pool as *mut c_void) {
                pl.note_free(a.charged);
            }
        }
    }
}

fn plain_free_kinds(k: Kind) -> bool {
    matches!(
        k,
        Kind::Device
            | Kind::Pitch
            | Kind::Managed
            | Kind::Async(_)
            | Kind::Legacy32
            | Kind::PoolImport
    )
}

export! {
    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, size: usize) {
        let ctx = context::current()?;
        if dptr.is_null() {
            return Err(INVALID_VALUE);
        }
        let b = alloc(process::get(), &ctx, size as u64, size as u64, Kind::Device)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(dptr, b) }
    }
}

export! {
    /// The legacy 32-bit entry point (`cuMemAlloc` at version 2000): a real
    /// allocation below 4 GiB (`MAP_32BIT`), charged like any other.
    fn cuMemAlloc(dptr: *mut CUdeviceptr_v1, size: u32) {
        let ctx = context::current()?;
        if dptr.is_null() {
            return Err(INVALID_VALUE);
        }
        let p = process::get();
        let b = alloc(p, &ctx, u64::from(size), u64::from(size), Kind::Legacy32)?;
        let Ok(b32) = u32::try_from(b) else {
            let _ = free(p, b, |_| true);
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        };
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(dptr, b32) }
    }
}

export! {
    fn cuMemFree_v2(dptr: CUdeviceptr) {
        let p = process::initialized()?;
        if dptr == 0 {
            return Ok(());
        }
        if crate::graph::free_outside(p, dptr) {
            // Graph memory: the allocation ends; the memory stays with the
            // graph's pool until trimmed.
            return Ok(());
        }
        let a = free(p, dptr, plain_free_kinds)?;
        if let Kind::Async(pool) = a.kind {
            if let Ok(pl) = p.pools.get(pool as *mut c_void) {
                pl.note_free(a.charged);
            }
        }
        Ok(())
    }
}

export! {
    /// The legacy 32-bit `cuMemFree` (version 2000).
    fn cuMemFree(dptr: CUdeviceptr_v1) {
        let p = process::initialized()?;
        if dptr == 0 {
            return Ok(());
        }
        free(p, u64::from(dptr), plain_free_kinds).map(|_| ())
    }
}

export! {
    /// Pitch = width rounded up to 512 bytes; charges pitch x height.
    fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, elem: u32) {
        let ctx = context::current()?;
        if dptr.is_null() || pitch.is_null() || width == 0 || height == 0 || !matches!(elem, 4 | 8 | 16) {
            return Err(INVALID_VALUE);
        }
        // Wider than the device's largest pitch (CU_DEVICE_ATTRIBUTE_MAX_PITCH),
        // or a size that overflows: invalid, as a real driver says.
        if width > i32::MAX as usize {
            return Err(INVALID_VALUE);
        }
        let pt = (width as u64).div_ceil(512) * 512;
        let bytes = pt.checked_mul(height as u64).ok_or(INVALID_VALUE)?;
        let b = alloc(process::get(), &ctx, bytes, bytes, Kind::Pitch)?;
        // SAFETY: caller's output pointers (checked non-NULL).
        unsafe {
            out(pitch, pt as usize)?;
            out(dptr, b)
        }
    }
}

export! {
    fn cuMemAllocManaged(dptr: *mut CUdeviceptr, size: usize, flags: u32) {
        let ctx = context::current()?;
        // CU_MEM_ATTACH_GLOBAL (1) or CU_MEM_ATTACH_HOST (2)
        if dptr.is_null() || !matches!(flags, 1 | 2) {
            return Err(INVALID_VALUE);
        }
        let b = alloc(process::get(), &ctx, size as u64, size as u64, Kind::Managed)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(dptr, b) }
    }
}

export! {
    /// Free = total - used by all processes on the device; total = device size.
    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) {
        let ctx = context::current()?;
        if free.is_null() || total.is_null() {
            return Err(INVALID_VALUE);
        }
        let d = process::get().device(ctx.device)?;
        let t = d.sim.total_mem();
        let f = t.saturating_sub(d.sim.mem_used());
        // SAFETY: caller's output pointers (checked non-NULL).
        unsafe {
            out(free, f as usize)?;
            out(total, t as usize)
        }
    }
}

export! {
    fn cuMemGetAddressRange_v2(pbase: *mut CUdeviceptr, psize: *mut usize, dptr: CUdeviceptr) {
        let p = process::initialized()?;
        let a = p.mem.find(dptr).ok_or(CUresult::ERROR_NOT_FOUND)?;
        // SAFETY: optional output pointers.
        unsafe {
            crate::entry::out_opt(pbase, a.base);
            crate::entry::out_opt(psize, a.size as usize);
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ host memory

#[derive(Clone, Debug)]
pub struct HostAlloc {
    pub base: u64,
    pub size: u64,
    pub flags: u32,
    /// Registered caller memory (not ours to unmap).
    pub registered: bool,
    pub ctx: usize,
}

/// Page-locked host memory and registered ranges (not device memory, not charged).
pub struct HostTable {
    map: Mutex<BTreeMap<u64, HostAlloc>>,
}

impl HostTable {
    pub fn new() -> HostTable {
        HostTable {
            map: Mutex::new(BTreeMap::new()),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, HostAlloc>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn find(&self, ptr: u64) -> Option<HostAlloc> {
        let m = self.lock();
        let (_, a) = m.range(..=ptr).next_back()?;
        (ptr < a.base + a.size.max(1)).then(|| a.clone())
    }
    pub fn covers(&self, ptr: u64, len: u64) -> bool {
        self.find(ptr).is_some_and(|a| ptr + len <= a.base + a.size)
    }
}

fn host_alloc(pp: *mut *mut c_void, size: usize, flags: u32) -> Res {
    let ctx = context::current()?;
    if pp.is_null() || flags & !0xf != 0 {
        return Err(INVALID_VALUE);
    }
    let len = size.max(1);
    let b = map_anon(len, false)?;
    process::get().host.lock().insert(
        b as u64,
        HostAlloc {
            base: b as u64,
            size: len as u64,
            flags,
            registered: false,
            ctx: handle_of(&ctx) as usize,
        },
    );
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(pp, b) }
}

export! {
    fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) { host_alloc(pp, size, 0) }
}

export! {
    fn cuMemHostAlloc(pp: *mut *mut c_void, size: usize, flags: u32) { host_alloc(pp, size, flags) }
}

export! {
    fn cuMemFreeHost(ptr: *mut c_void) {
        let p = process::initialized()?;
        let mut m = p.host.lock();
        match m.get(&(ptr as u64)) {
            Some(a) if !a.registered => {
                let a = m.remove(&(ptr as u64)).expect("present");
                unmap(a.base, a.size as usize);
                Ok(())
            }
            _ => Err(INVALID_VALUE),
        }
    }
}

export! {
    fn cuMemHostRegister_v2(ptr: *mut c_void, size: usize, flags: u32) {
        let ctx = context::current()?;
        if ptr.is_null() || size == 0 || flags & !0xf != 0 {
            return Err(INVALID_VALUE);
        }
        let p = process::get();
        if p.host.find(ptr as u64).is_some() || p.host.find(ptr as u64 + size as u64 - 1).is_some() {
            return Err(CUresult(712));
        }
        p.host.lock().insert(ptr as u64, HostAlloc { base: ptr as u64, size: size as u64, flags, registered: true, ctx: handle_of(&ctx) as usize });
        Ok(())
    }
}

export! {
    fn cuMemHostUnregister(ptr: *mut c_void) {
        let p = process::initialized()?;
        let mut m = p.host.lock();
        match m.get(&(ptr as u64)) {
            Some(a) if a.registered => {
                m.remove(&(ptr as u64));
                Ok(())
            }
            _ => Err(CUresult(713)),
        }
    }
}

export! {
    /// Unified addressing: the device pointer of pinned host memory is its host address.
    fn cuMemHostGetDevicePointer_v2(dptr: *mut CUdeviceptr, ptr: *mut c_void, flags: u32) {
        let p = process::initialized()?;
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        p.host.find(ptr as u64).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(dptr, ptr as u64) }
    }
}

export! {
    fn cuMemHostGetFlags(pflags: *mut u32, ptr: *mut c_void) {
        let p = process::initialized()?;
        let a = p.host.find(ptr as u64).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pflags, a.flags) }
    }
}

// ------------------------------------------------------------------ pointer attributes

/// Writes one attribute of `ptr` (booleans are written as 32-bit integers,
/// which is what the runtime reads); `Err(INVALID_VALUE)` when `ptr` is not
/// memory this driver knows.
///
/// # Safety
/// `data` is valid for a write of the attribute's type.
unsafe fn pointer_attribute(p: &Process, data: *mut c_void, attr: u32, ptr: u64) -> Res {
    // SAFETY (all writes below): `data` points to storage of the attribute's documented type.
    if let Some(a) = p.mem.find(ptr) {
        let managed = a.kind == Kind::Managed;
        return unsafe {
            match attr {
                pointer_attr::CONTEXT => out(data.cast::<usize>(), a.ctx),
                pointer_attr::MEMORY_TYPE => out(data.cast::<u32>(), memorytype::DEVICE),
                pointer_attr::DEVICE_POINTER => out(data.cast::<u64>(), ptr),
                pointer_attr::HOST_POINTER => {
                    if managed {
                        out(data.cast::<u64>(), ptr)
                    } else {
                        Err(INVALID_VALUE)
                    }
                }
                pointer_attr::SYNC_MEMOPS
                | pointer_attr::IS_LEGACY_CUDA_IPC_CAPABLE
                | pointer_attr::IS_GPU_DIRECT_RDMA_CAPABLE => out(data.cast::<u32>(), 0),
                pointer_attr::BUFFER_ID | pointer_attr::MEMORY_BLOCK_ID => {
                    out(data.cast::<u64>(), a.base)
                }
                pointer_attr::IS_MANAGED => out(data.cast::<u32>(), u32::from(managed)),
                pointer_attr::DEVICE_ORDINAL => out(data.cast::<i32>(), a.device),
                pointer_attr::RANGE_START_ADDR | pointer_attr::MAPPING_BASE_ADDR => {
                    out(data.cast::<u64>(), a.base)
                }
                pointer_attr::RANGE_SIZE | pointer_attr::MAPPING_SIZE => {
                    out(data.cast::<usize>(), a.size as usize)
                }
                pointer_attr::MAPPED => out(data.cast::<u32>(), 1),
                pointer_attr::ALLOWED_HANDLE_TYPES => out(data.cast::<u64>(), 0),
                pointer_attr::ACCESS_FLAGS => out(data.cast::<u32>(), 3),
                pointer_attr::MEMPOOL_HANDLE => match a.kind {
                    Kind::Async(pool) => out(data.cast::<usize>(), pool),
                    _ => out(data.cast::<usize>(), 0),
                },
                _ => Err(INVALID_VALUE),
            }
        };
    }
    let h = p.host.find(ptr).ok_or(INVALID_VALUE)?;
    // SAFETY: `data` points to storage of the attribute's documented type.
    unsafe {
        match attr {
            pointer_attr::CONTEXT => out(data.cast::<usize>(), h.ctx),
            pointer_attr::MEMORY_TYPE => out(data.cast::<u32>(), memorytype::HOST),
            pointer_attr::DEVICE_POINTER | pointer_attr::HOST_POINTER => {
                out(data.cast::<u64>(), ptr)
            }
            pointer_attr::IS_MANAGED | pointer_attr::SYNC_MEMOPS => out(data.cast::<u32>(), 0),
            pointer_attr::MAPPED => out(data.cast::<u32>(), 1),
            pointer_attr::DEVICE_ORDINAL => out(data.cast::<i32>(), 0),
            pointer_attr::RANGE_START_ADDR => out(data.cast::<u64>(), h.base),
            pointer_attr::RANGE_SIZE => out(data.cast::<usize>(), h.size as usize),
            pointer_attr::BUFFER_ID => out(data.cast::<u64>(), h.base),
            _ => Err(INVALID_VALUE),
        }
    }
}

export! {
    fn cuPointerGetAttribute(data: *mut c_void, attr: u32, ptr: CUdeviceptr) {
        let p = process::initialized()?;
        if data.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: `data` is the caller's storage for this attribute.
        unsafe { pointer_attribute(p, data, attr, ptr) }
    }
}

export! {
    /// Unlike the singular form, unknown pointers are not an error: their
    /// attributes read as NULL/0 (memory type 0 = unregistered host memory).
    fn cuPointerGetAttributes(n: u32, attrs: *mut u32, data: *mut *mut c_void, ptr: CUdeviceptr) {
        let p = process::initialized()?;
        // SAFETY: caller's arrays of n elements.
        let (attrs, data) = unsafe { (slice(attrs, n as usize)?, slice(data, n as usize)?) };
        let known = p.mem.find(ptr).is_some() || p.host.find(ptr).is_some();
        for (&a, &d) in attrs.iter().zip(data) {
            if d.is_null() {
                return Err(INVALID_VALUE);
            }
            if known {
                // SAFETY: `d` is the caller's storage for attribute `a`.
                if unsafe { pointer_attribute(p, d, a, ptr) }.is_ok() {
                    continue;
                }
            }
            // SAFETY: `d` is the caller's storage for attribute `a`; write its NULL value.
            unsafe {
                match a {
                    pointer_attr::DEVICE_ORDINAL => out(d.cast::<i32>(), -2)?,
                    pointer_attr::MEMORY_TYPE | pointer_attr::ACCESS_FLAGS => out(d.cast::<u32>(), 0)?,
                    pointer_attr::SYNC_MEMOPS | pointer_attr::IS_MANAGED | pointer_attr::MAPPED | pointer_attr::IS_LEGACY_CUDA_IPC_CAPABLE | pointer_attr::IS_GPU_DIRECT_RDMA_CAPABLE => out(d.cast::<u32>(), 0)?,
                    _ => out(d.cast::<u64>(), 0)?,
                }
            }
        }
        Ok(())
    }
}

//! Virtual memory management: physical allocations are memfds (charged to
//! the ledger at `cuMemCreate`, returned at the last `cuMemRelease`),
//! reservations are `PROT_NONE` address ranges, `cuMemMap` maps a memfd
//! `MAP_SHARED|MAP_FIXED` into a reservation and `cuMemSetAccess` makes it
//! readable/writable with `mprotect`.

use crate::entry::{out, read, slice, INVALID_VALUE};
use crate::memory::{self, Alloc, Kind, PAGE};
use crate::process;
use cuda_abi::driver_types::{
    CUmemAccessDesc, CU_MEM_ACCESS_FLAGS_PROT_READ, CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
};
use cuda_abi::{
    CUdeviceptr, CUmemAllocationProp, CUmemGenericAllocationHandle, CUmemLocation, CUresult,
    CU_MEM_LOCATION_TYPE_DEVICE,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

const HANDLE_TAG: u64 = 0x5ead_0000_0000_0000;
/// The memfd name of physical memory, followed by the device ordinal.
const MEMFD_PREFIX: &str = "simcuda-vmm-dev";
/// `CUmemAllocationHandleType`.
const HANDLE_TYPE_POSIX_FD: u32 = 1;

struct Phys {
    fd: i32,
    size: u64,
    prop: CUmemAllocationProp,
    refs: u32,
    /// Whether this process created it and carries its charge (an imported
    /// handle is charged to the process that created the memory).
    owned: bool,
}

struct Mapping {
    size: u64,
    handle: u64,
    access: u32,
}

#[derive(Default)]
struct Inner {
    next: u64,
    phys: HashMap<u64, Phys>,
    reservations: BTreeMap<u64, u64>,
    maps: BTreeMap<u64, Mapping>,
}

pub struct State {
    inner: Mutex<Inner>,
}

// SAFETY: CUmemAllocationProp holds a raw pointer (win32 metadata) that is
// only stored and copied back to callers, never dereferenced.
unsafe impl Send for State {}
// SAFETY: as above; all access goes through the mutex.
unsafe impl Sync for State {}

impl State {
    pub fn new() -> State {
        State {
            inner: Mutex::new(Inner::default()),
        }
    }
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn reservation_of(&self, ptr: u64, size: u64) -> Option<(u64, u64)> {
        let (&b, &s) = self.reservations.range(..=ptr).next_back()?;
        (ptr + size <= b + s).then_some((b, s))
    }
    fn mapping_at(&self, ptr: u64) -> Option<(u64, &Mapping)> {
        let (&b, m) = self.maps.range(..=ptr).next_back()?;
        (ptr < b + m.size).then_some((b, m))
    }
    /// Bases of the mappings that exactly tile `[ptr, ptr+size)`.
    fn tiling(&self, ptr: u64, size: u64) -> Option<Vec<u64>> {
        let mut at = ptr;
        let mut v = Vec::new();
        while at < ptr + size {
            let m = self.maps.get(&at)?;
            v.push(at);
            at += m.size;
        }
        (at == ptr + size).then_some(v)
    }
}

fn granular(size: u64) -> bool {
    size > 0 && size.is_multiple_of(PAGE)
}

export! {
    fn cuMemGetAllocationGranularity(gran: *mut usize, prop: *const CUmemAllocationProp, option: u32) {
        let p = process::initialized()?;
        // SAFETY: caller's properties struct.
        let pr = unsafe { read(prop)? };
        if option > 1 || pr.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE {
            return Err(INVALID_VALUE);
        }
        p.device(pr.location.id)?;
        // SAFETY: caller's output pointer.
        unsafe { out(gran, PAGE as usize) }
    }
}

export! {
    fn cuMemCreate(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: u64) {
        let p = process::initialized()?;
        // SAFETY: caller's properties struct.
        let pr = unsafe { read(prop)? };
        if handle.is_null() || flags != 0 || pr.type_ != 1 || pr.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE || !granular(size as u64) {
            return Err(INVALID_VALUE);
        }
        let dev = p.device(pr.location.id)?;
        dev.sim.mem_charge(size as u64).map_err(|_| CUresult::ERROR_OUT_OF_MEMORY)?;
        // The name says which device the memory is on, for an importer.
        let name = std::ffi::CString::new(format!("{MEMFD_PREFIX}{}", pr.location.id)).map_err(|_| INVALID_VALUE)?;
        // SAFETY: creates a new anonymous file; the name is NUL-terminated.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: fd is ours; ftruncate sizes the new file.
        if fd < 0 || unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            if fd >= 0 {
                // SAFETY: closing our own descriptor.
                unsafe { libc::close(fd) };
            }
            dev.sim.mem_uncharge(size as u64);
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        let mut st = p.vmm.lock();
        st.next += 1;
        let h = HANDLE_TAG | st.next;
        st.phys.insert(h, Phys { fd, size: size as u64, prop: pr, refs: 1, owned: true });
        drop(st);
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(handle, h) }
    }
}

export! {
    /// Drops one reference; the last one returns the charge to the ledger.
    /// Existing mappings keep their memory until unmapped, as CUDA's do.
    fn cuMemRelease(handle: CUmemGenericAllocationHandle) {
        let p = process::initialized()?;
        let mut st = p.vmm.lock();
        let ph = st.phys.get_mut(&handle).ok_or(INVALID_VALUE)?;
        ph.refs -= 1;
        if ph.refs == 0 {
            let ph = st.phys.remove(&handle).expect("present");
            drop(st);
            // SAFETY: closing our own descriptor; mappings hold their own reference to the file.
            unsafe { libc::close(ph.fd) };
            if ph.owned {
                p.device(ph.prop.location.id)?.sim.mem_uncharge(ph.size);
            }
        }
        Ok(())
    }
}

export! {
    fn cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, flags: u64) {
        let p = process::initialized()?;
        let _ = addr; // a hint; the driver may place the range elsewhere
        if ptr.is_null() || flags != 0 || !granular(size as u64) || (alignment != 0 && !alignment.is_power_of_two()) {
            return Err(INVALID_VALUE);
        }
        let align = alignment.max(PAGE as usize);
        let len = size + align;
        let raw = memory::reserve(len)?;
        let base = raw.div_ceil(align as u64) * align as u64;
        memory::unmap(raw, (base - raw) as usize);
        memory::unmap(base + size as u64, (raw + len as u64 - base - size as u64) as usize);
        p.vmm.lock().reservations.insert(base, size as u64);
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(ptr, base) }
    }
}

export! {
    fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) {
        let p = process::initialized()?;
        let mut st = p.vmm.lock();
        if st.reservations.get(&ptr) != Some(&(size as u64)) {
            return Err(INVALID_VALUE);
        }
        st.reservations.remove(&ptr);
        let inside: Vec<u64> = st.maps.range(ptr..ptr + size as u64).map(|(b, _)| *b).collect();
        for b in inside {
            st.maps.remove(&b);
            p.mem.remove(b);
        }
        drop(st);
        memory::unmap(ptr, size);
        Ok(())
    }
}

export! {
    fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64) {
        let p = process::initialized()?;
        let size64 = size as u64;
        let mut st = p.vmm.lock();
        if flags != 0 || !granular(size64) || !(offset as u64).is_multiple_of(PAGE) {
            return Err(INVALID_VALUE);
        }
        st.reservation_of(ptr, size64).ok_or(INVALID_VALUE)?;
        let ph = st.phys.get(&handle).ok_or(INVALID_VALUE)?;
        if offset as u64 + size64 > ph.size {
            return Err(INVALID_VALUE);
        }
        if st.maps.range(..ptr + size64).next_back().is_some_and(|(b, m)| b + m.size > ptr) {
            return Err(CUresult(208)); // CUDA_ERROR_ALREADY_MAPPED
        }
        let (fd, device) = (ph.fd, ph.prop.location.id);
        // SAFETY: maps our memfd over a range inside our own reservation (MAP_FIXED replaces PROT_NONE pages we own).
        let r = unsafe { libc::mmap(ptr as *mut c_void, size, libc::PROT_NONE, libc::MAP_SHARED | libc::MAP_FIXED, fd, offset as libc::off_t) };
        if r == libc::MAP_FAILED {
            return Err(CUresult(205)); // CUDA_ERROR_MAP_FAILED
        }
        st.maps.insert(ptr, Mapping { size: size64, handle, access: 0 });
        p.mem.insert(Alloc { base: ptr, size: size64, mapped: 0, charged: 0, device, ctx: 0, ctx_id: 0, kind: Kind::Vmm });
        Ok(())
    }
}

export! {
    fn cuMemUnmap(ptr: CUdeviceptr, size: usize) {
        let p = process::initialized()?;
        let mut st = p.vmm.lock();
        let bases = st.tiling(ptr, size as u64).ok_or(INVALID_VALUE)?;
        // SAFETY: our own mapped range, inside our own reservation.
        if unsafe { memory::to_reservation(ptr, size) }.is_err() {
            return Err(CUresult(206)); // CUDA_ERROR_UNMAP_FAILED
        }
        for b in bases {
            st.maps.remove(&b);
            p.mem.remove(b);
        }
        Ok(())
    }
}

export! {
    fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) {
        let p = process::initialized()?;
        // SAFETY: caller's array of `count` descriptors.
        let d = unsafe { slice(desc, count)? };
        if d.is_empty() {
            return Err(INVALID_VALUE);
        }
        let mut flags = 0;
        for x in d {
            if x.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE || x.flags > 3 || x.flags == 2 {
                return Err(INVALID_VALUE);
            }
            p.device(x.location.id)?;
            flags = flags.max(x.flags);
        }
        let mut st = p.vmm.lock();
        let bases = st.tiling(ptr, size as u64).ok_or(INVALID_VALUE)?;
        let prot = match flags {
            CU_MEM_ACCESS_FLAGS_PROT_READWRITE => libc::PROT_READ | libc::PROT_WRITE,
            CU_MEM_ACCESS_FLAGS_PROT_READ => libc::PROT_READ,
            _ => libc::PROT_NONE,
        };
        // SAFETY: changes protection of pages this driver mapped itself.
        if unsafe { libc::mprotect(ptr as *mut c_void, size, prot) } != 0 {
            return Err(INVALID_VALUE);
        }
        for b in bases {
            if let Some(m) = st.maps.get_mut(&b) {
                m.access = flags;
            }
        }
        Ok(())
    }
}

export! {
    fn cuMemGetAccess(flags: *mut u64, location: *const CUmemLocation, ptr: CUdeviceptr) {
        let p = process::initialized()?;
        // SAFETY: caller's location struct.
        let loc = unsafe { read(location)? };
        p.device(loc.id)?;
        let st = p.vmm.lock();
        let (_, m) = st.mapping_at(ptr).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(flags, u64::from(m.access)) }
    }
}

export! {
    fn cuMemGetAllocationPropertiesFromHandle(prop: *mut CUmemAllocationProp, handle: CUmemGenericAllocationHandle) {
        let p = process::initialized()?;
        let st = p.vmm.lock();
        let ph = st.phys.get(&handle).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(prop, ph.prop) }
    }
}

export! {
    fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void) {
        let p = process::initialized()?;
        let mut st = p.vmm.lock();
        let h = st.mapping_at(addr as u64).map(|(_, m)| m.handle).ok_or(INVALID_VALUE)?;
        st.phys.get_mut(&h).ok_or(INVALID_VALUE)?.refs += 1;
        drop(st);
        // SAFETY: caller's output pointer.
        unsafe { out(handle, h) }
    }
}

export! {
    /// POSIX file descriptors are the shareable handle of this driver (as on
    /// Linux): a new descriptor of the memory's memfd, which another process
    /// receives over a Unix socket (SCM_RIGHTS) or through pidfd_getfd and
    /// imports. The allocation must have asked for them at `cuMemCreate`.
    fn cuMemExportToShareableHandle(shareable: *mut c_void, handle: CUmemGenericAllocationHandle, ty: u32, flags: u64) {
        let p = process::initialized()?;
        if shareable.is_null() || flags != 0 {
            return Err(INVALID_VALUE);
        }
        let st = p.vmm.lock();
        let ph = st.phys.get(&handle).ok_or(INVALID_VALUE)?;
        if ty != HANDLE_TYPE_POSIX_FD {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        if ph.prop.requestedHandleTypes & HANDLE_TYPE_POSIX_FD == 0 {
            return Err(INVALID_VALUE);
        }
        // SAFETY: duplicates our own descriptor; the copy belongs to the caller.
        let fd = unsafe { libc::fcntl(ph.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        drop(st);
        // SAFETY: for POSIX descriptors the shareable handle is an int.
        unsafe { out(shareable.cast::<i32>(), fd) }
    }
}

/// The device of a memfd this driver made for physical memory, from its name.
fn memfd_device(fd: i32) -> Option<i32> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let name = link.to_str()?.strip_prefix("/memfd:")?;
    let rest = name.strip_prefix(MEMFD_PREFIX)?;
    rest.split(' ').next()?.parse().ok()
}

export! {
    /// Imports memory another process (or this one) exported: a new handle
    /// to the same physical memory, which stays charged to the process that
    /// created it (the ledger counts it once). The descriptor stays the
    /// caller's; the handle keeps its own.
    fn cuMemImportFromShareableHandle(handle: *mut CUmemGenericAllocationHandle, os_handle: *mut c_void, ty: u32) {
        let p = process::initialized()?;
        if handle.is_null() {
            return Err(INVALID_VALUE);
        }
        if ty != HANDLE_TYPE_POSIX_FD {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        let fd = i32::try_from(os_handle as usize).map_err(|_| INVALID_VALUE)?;
        let device = memfd_device(fd).ok_or(INVALID_VALUE)?;
        p.device(device)?;
        // SAFETY: fstat of a descriptor the caller handed us; the struct is ours.
        let size = unsafe {
            let mut sb: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut sb) != 0 {
                return Err(INVALID_VALUE);
            }
            sb.st_size as u64
        };
        if !granular(size) {
            return Err(INVALID_VALUE);
        }
        // SAFETY: duplicates the caller's descriptor; the copy is the handle's.
        let own = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if own < 0 {
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        let prop = CUmemAllocationProp {
            type_: 1,
            requestedHandleTypes: HANDLE_TYPE_POSIX_FD,
            location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: device },
            win32HandleMetaData: std::ptr::null_mut(),
            allocFlags: Default::default(),
        };
        let mut st = p.vmm.lock();
        st.next += 1;
        let h = HANDLE_TAG | st.next;
        st.phys.insert(h, Phys { fd: own, size, prop, refs: 1, owned: false });
        drop(st);
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(handle, h) }
    }
}

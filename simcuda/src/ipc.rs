//! Legacy CUDA IPC (`cuIpcGetMemHandle` / `cuIpcOpenMemHandle`): another
//! process maps the same device memory. Simulated device memory is host
//! memory, so exporting moves an allocation's pages, in place and at the
//! same address, into a memfd; the 64-byte handle names the exporter's pid,
//! that descriptor and its inode, and the importer maps the file through
//! `/proc/<pid>/fd` (the same user, as CUDA's IPC in practice requires).
//!
//! Charging: the memory stays charged to the exporter, once; an importer
//! is not charged. CUDA makes freeing exported memory while an importer
//! still has it open undefined; here the importer keeps its pages.
//!
//! Events (`cuIpcGetEventHandle` / `cuIpcOpenEventHandle`): an event made
//! with `CU_EVENT_INTERPROCESS` keeps its last record (device, context slot
//! and generation, sequence number) in a small memfd page under a sequence
//! lock; every process that opened the handle maps the same page, records
//! into it and asks the shared device whether that work has completed.

use crate::entry::{out, Res, INVALID_VALUE};
use crate::memory::{Alloc, Kind};
use crate::process::{self, Process};
use cuda_abi::{CUdeviceptr, CUresult};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

const MAGIC: u32 = 0x5349_4d49; // "IMIS"
const EVENT_MAGIC: u32 = 0x5645_4d49; // "IMEV"

/// `CUipcMemHandle`: 64 opaque bytes, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcMemHandle {
    reserved: [u8; 64],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wire {
    pid: u32,
    fd: i32,
    device: i32,
    ino: u64,
    size: u64,
    mapped: u64,
}

impl Wire {
    fn encode(&self) -> IpcMemHandle {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.pid.to_le_bytes());
        b[8..12].copy_from_slice(&self.fd.to_le_bytes());
        b[12..16].copy_from_slice(&self.device.to_le_bytes());
        b[16..24].copy_from_slice(&self.ino.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.mapped.to_le_bytes());
        IpcMemHandle { reserved: b }
    }
    fn decode(h: &IpcMemHandle) -> Option<Wire> {
        let b = &h.reserved;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Wire {
            pid: u32_at(4),
            fd: u32_at(8) as i32,
            device: u32_at(12) as i32,
            ino: u64_at(16),
            size: u64_at(24),
            mapped: u64_at(32),
        })
    }
}

/// This process's exported and imported IPC memory.
#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Exported allocations by base: their memfd and its inode.
    exports: HashMap<u64, (i32, u64)>,
    /// Imported memory by (exporter pid, inode): the local base and opens.
    imports: HashMap<(u32, u64), (u64, u32)>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ino_of(fd: i32) -> Res<(u64, u64)> {
    // SAFETY: fstat into our own zeroed struct.
    unsafe {
        let mut sb: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut sb) != 0 {
            return Err(INVALID_VALUE);
        }
        Ok((sb.st_ino, sb.st_size as u64))
    }
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this module owns.
    unsafe { libc::close(fd) };
}

/// Moves an allocation's pages into a new memfd mapped at the same address.
/// Only resident pages are copied (untouched ones are zero either way).
fn share(a: &Alloc) -> Res<(i32, u64)> {
    let name = std::ffi::CString::new(format!("simcuda-ipc-dev{}", a.device))
        .map_err(|_| INVALID_VALUE)?;
    // SAFETY: a new anonymous file; the name is NUL-terminated.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(CUresult::ERROR_OUT_OF_MEMORY);
    }
    let fail = |fd| {
        close(fd);
        Err(CUresult::ERROR_OUT_OF_MEMORY)
    };
    // SAFETY: sizes our own new file.
    if unsafe { libc::ftruncate(fd, a.mapped as libc::off_t) } != 0 {
        return fail(fd);
    }
    const PG: usize = 4096;
    let pages = a.mapped.div_ceil(PG);
    let mut resident = vec![0u8; pages];
    // SAFETY: mincore over our own mapping of `mapped` bytes into a vector of one byte per page.
    let known =
        unsafe { libc::mincore(a.base as *mut c_void, a.mapped, resident.as_mut_ptr()) } == 0;
    for (i, r) in resident.iter().enumerate() {
        if known && r & 1 == 0 {
            continue;
        }
        let off = i * PG;
        let len = PG.min(a.mapped - off);
        // SAFETY: copies one page of our own mapping into our own file.
        if unsafe {
            libc::pwrite(
                fd,
                (a.base as usize + off) as *const c_void,
                len,
                off as libc::off_t,
            )
        } != len as isize
        {
            return fail(fd);
        }
    }
    // SAFETY: replaces our own private mapping with the file holding the same bytes, at the same address.
    let r = unsafe {
        libc::mmap(
            a.base as *mut c_void,
            a.mapped,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return fail(fd);
    }
    Ok((fd, ino_of(fd)?.0))
}

/// Called when an allocation is freed: its export (if any) ends.
/// Called when an allocation goes (freed, or its context destroyed): its
/// export ends, and an import of it is no longer open here.
pub fn forget(p: &Process, a: &Alloc) {
    let mut st = p.ipc.lock();
    if let Some((fd, _)) = st.exports.remove(&a.base) {
        close(fd);
    }
    if a.kind == Kind::Ipc {
        st.imports.retain(|_, (b, _)| *b != a.base);
    }
}

/// Exports an allocation: its pages move into a memfd (once), and the
/// handle names it.
pub fn export(p: &Process, a: &Alloc) -> Res<IpcMemHandle> {
    if a.mapped == 0 {
        return Err(INVALID_VALUE);
    }
    let mut st = p.ipc.lock();
    let (fd, ino) = match st.exports.get(&a.base) {
        Some(e) => *e,
        None => {
            let e = share(a)?;
            st.exports.insert(a.base, e);
            e
        }
    };
    let w = Wire {
        pid: std::process::id(),
        fd,
        device: a.device,
        ino,
        size: a.size,
        mapped: a.mapped as u64,
    };
    Ok(w.encode())
}

export! {
    fn cuIpcGetMemHandle(handle: *mut IpcMemHandle, dptr: CUdeviceptr) {
        let p = process::initialized()?;
        if handle.is_null() {
            return Err(INVALID_VALUE);
        }
        let a = p.mem.get(dptr).ok_or(INVALID_VALUE)?;
        if !matches!(a.kind, Kind::Device | Kind::Pitch | Kind::Legacy32) {
            return Err(INVALID_VALUE);
        }
        let h = export(p, &a)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(handle, h) }
    }
}

/// Maps another process's exported memory (not charged here); `Kind::Ipc`
/// imports are counted per handle, so a second open returns the same address.
pub fn import(p: &Process, h: &IpcMemHandle, kind: Kind) -> Res<u64> {
    let ctx = crate::context::current()?;
    let w = Wire::decode(h).ok_or(INVALID_VALUE)?;
    p.device(w.device)?;
    if w.pid == std::process::id() {
        // A process cannot open its own handle.
        return Err(INVALID_VALUE);
    }
    let mut st = p.ipc.lock();
    if kind == Kind::Ipc {
        if let Some((base, refs)) = st.imports.get_mut(&(w.pid, w.ino)) {
            *refs += 1;
            return Ok(*base);
        }
    }
    let path = std::ffi::CString::new(format!("/proc/{}/fd/{}", w.pid, w.fd))
        .map_err(|_| INVALID_VALUE)?;
    // SAFETY: opens a path we built; the descriptor is ours.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        // The exporter is gone or freed the memory: the handle is stale.
        return Err(CUresult::ERROR_INVALID_HANDLE);
    }
    let ok = ino_of(fd).is_ok_and(|(ino, size)| ino == w.ino && size == w.mapped);
    if !ok || w.mapped == 0 {
        close(fd);
        return Err(CUresult::ERROR_INVALID_HANDLE);
    }
    // SAFETY: maps the shared file anywhere; a fresh range.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            w.mapped as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    close(fd);
    if base == libc::MAP_FAILED {
        return Err(CUresult::ERROR_OUT_OF_MEMORY);
    }
    let base = base as u64;
    if kind == Kind::Ipc {
        st.imports.insert((w.pid, w.ino), (base, 1));
    }
    p.mem.insert(Alloc {
        base,
        size: w.size,
        mapped: w.mapped as usize,
        charged: 0,
        device: w.device,
        ctx: crate::process::handle_of(&ctx) as usize,
        ctx_id: ctx.id,
        kind,
    });
    Ok(base)
}

fn open(dptr: *mut CUdeviceptr, h: IpcMemHandle, flags: u32) -> Res {
    let p = process::initialized()?;
    // CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS is the only flag.
    if dptr.is_null() || flags > 1 {
        return Err(INVALID_VALUE);
    }
    let base = import(p, &h, Kind::Ipc)?;
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(dptr, base) }
}

export! {
    fn cuIpcOpenMemHandle(dptr: *mut CUdeviceptr, h: IpcMemHandle, flags: u32) { open(dptr, h, flags) }
}

export! {
    fn cuIpcOpenMemHandle_v2(dptr: *mut CUdeviceptr, h: IpcMemHandle, flags: u32) { open(dptr, h, flags) }
}

export! {
    fn cuIpcCloseMemHandle(dptr: CUdeviceptr) {
        let p = process::initialized()?;
        let mut st = p.ipc.lock();
        let key = st.imports.iter().find(|(_, (b, _))| *b == dptr).map(|(k, _)| *k).ok_or(INVALID_VALUE)?;
        let e = st.imports.get_mut(&key).expect("found above");
        e.1 -= 1;
        if e.1 == 0 {
            st.imports.remove(&key);
            drop(st);
            if p.mem.get(dptr).is_some_and(|a| a.kind == Kind::Ipc) {
                if let Some(a) = p.mem.remove(dptr) {
                    crate::memory::unmap(a.base, a.mapped);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_foreign_bytes_are_refused() {
        let w = Wire {
            pid: 42,
            fd: 7,
            device: 1,
            ino: 99,
            size: 1000,
            mapped: 2 << 20,
        };
        assert_eq!(Wire::decode(&w.encode()), Some(w));
        assert_eq!(Wire::decode(&IpcMemHandle { reserved: [0; 64] }), None);
    }
}

/// The shared page of an interprocess event: a sequence lock and the last
/// record.
#[repr(C)]
struct RecordPage {
    version: std::sync::atomic::AtomicU64,
    device: std::sync::atomic::AtomicU64,
    index: std::sync::atomic::AtomicU64,
    gen: std::sync::atomic::AtomicU64,
    seq: std::sync::atomic::AtomicU64,
}

const RECORD_BYTES: usize = 4096;

/// An interprocess event's shared record (its own memfd, mapped).
pub struct SharedRecord {
    page: *const RecordPage,
    fd: i32,
    ino: u64,
}

// SAFETY: the page is only accessed through atomics; the descriptor is owned.
unsafe impl Send for SharedRecord {}
// SAFETY: as above.
unsafe impl Sync for SharedRecord {}

impl Drop for SharedRecord {
    fn drop(&mut self) {
        crate::memory::unmap(self.page as u64, RECORD_BYTES);
        if self.fd >= 0 {
            close(self.fd);
        }
    }
}

/// [`map_record`], closing `fd` if it fails.
fn map_record_or_close(fd: i32) -> Res<*const RecordPage> {
    map_record(fd).inspect_err(|_| close(fd))
}

fn map_record(fd: i32) -> Res<*const RecordPage> {
    // SAFETY: maps one page of our own descriptor, shared.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RECORD_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(CUresult::ERROR_OUT_OF_MEMORY);
    }
    Ok(p as *const RecordPage)
}

impl SharedRecord {
    pub fn new() -> Res<SharedRecord> {
        // SAFETY: a new anonymous file; the name is a NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"simcuda-ipc-event".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: sizes our own new file (zero-filled: never recorded).
        if unsafe { libc::ftruncate(fd, RECORD_BYTES as libc::off_t) } != 0 {
            close(fd);
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        let page = map_record_or_close(fd)?;
        let ino = ino_of(fd)?.0;
        Ok(SharedRecord { page, fd, ino })
    }

    fn page(&self) -> &RecordPage {
        // SAFETY: a live shared mapping of at least one RecordPage, for as long as self.
        unsafe { &*self.page }
    }

    /// Publishes a record (one writer at a time per event, as CUDA requires
    /// of a recording; concurrent recorders in two processes are ordered by
    /// the version counter and the last one wins).
    pub fn store(&self, device: i32, index: u32, gen: u64, seq: u64) {
        use std::sync::atomic::Ordering::*;
        let p = self.page();
        // Take the lock: even -> odd (another writer holds it while odd).
        // A writer that died holding it is overtaken after a second: the
        // version is then left as it is, odd, and our update ends even.
        let start = std::time::Instant::now();
        loop {
            let v = p.version.load(Acquire);
            if v.is_multiple_of(2)
                && p.version
                    .compare_exchange_weak(v, v + 1, AcqRel, Relaxed)
                    .is_ok()
            {
                break;
            }
            if v % 2 == 1 && start.elapsed() > std::time::Duration::from_secs(1) {
                break;
            }
            std::thread::yield_now();
        }
        // The data stores below stay after the version became odd.
        std::sync::atomic::fence(Release);
        p.device.store(device as u64, Relaxed);
        p.index.store(u64::from(index), Relaxed);
        p.gen.store(gen, Relaxed);
        p.seq.store(seq, Relaxed);
        p.version.fetch_add(1, Release);
    }

    /// The last record: (device, context index, generation, seq).
    pub fn load(&self) -> Option<(i32, u32, u64, u64)> {
        use std::sync::atomic::Ordering::*;
        let p = self.page();
        let start = std::time::Instant::now();
        loop {
            let v1 = p.version.load(Acquire);
            let r = (
                p.device.load(Relaxed) as i32,
                p.index.load(Relaxed) as u32,
                p.gen.load(Relaxed),
                p.seq.load(Relaxed),
            );
            std::sync::atomic::fence(Acquire);
            let stable = v1.is_multiple_of(2) && p.version.load(Relaxed) == v1;
            // A writer that died mid-update leaves the lock taken: after a
            // second, its last values are read as they are.
            if stable || start.elapsed() > std::time::Duration::from_secs(1) {
                return (r.3 != 0).then_some(r);
            }
            std::thread::yield_now();
        }
    }
}

/// `CUipcEventHandle`: 64 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcEventHandle {
    reserved: [u8; 64],
}

export! {
    fn cuIpcGetEventHandle(handle: *mut IpcEventHandle, event: *mut c_void) {
        let p = process::initialized()?;
        if handle.is_null() {
            return Err(INVALID_VALUE);
        }
        let e = p.events.get(event)?;
        let r = e.shared.as_ref().filter(|r| r.fd >= 0).ok_or(INVALID_VALUE)?;
        let w = Wire { pid: std::process::id(), fd: r.fd, device: e.ctx.device, ino: r.ino, size: 0, mapped: 0 };
        let mut h = w.encode().reserved;
        h[0..4].copy_from_slice(&EVENT_MAGIC.to_le_bytes());
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(handle, IpcEventHandle { reserved: h }) }
    }
}

export! {
    /// An event of the calling context bound to the exporter's record.
    fn cuIpcOpenEventHandle(event: *mut *mut c_void, handle: IpcEventHandle) {
        let p = process::initialized()?;
        let ctx = crate::context::current()?;
        if event.is_null() {
            return Err(INVALID_VALUE);
        }
        let mut b = handle.reserved;
        if b[0..4] != EVENT_MAGIC.to_le_bytes() {
            return Err(INVALID_VALUE);
        }
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        let w = Wire::decode(&IpcMemHandle { reserved: b }).ok_or(INVALID_VALUE)?;
        if w.pid == std::process::id() {
            return Err(INVALID_VALUE);
        }
        let path = std::ffi::CString::new(format!("/proc/{}/fd/{}", w.pid, w.fd)).map_err(|_| INVALID_VALUE)?;
        // SAFETY: opens a path we built; the descriptor is ours.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(CUresult::ERROR_INVALID_HANDLE);
        }
        if !ino_of(fd).is_ok_and(|(ino, size)| ino == w.ino && size == RECORD_BYTES as u64) {
            close(fd);
            return Err(CUresult::ERROR_INVALID_HANDLE);
        }
        let page = map_record_or_close(fd)?;
        // The mapping keeps the page; only the exporter hands out handles.
        close(fd);
        let shared = SharedRecord { page, fd: -1, ino: w.ino };
        let flags = crate::event::CU_EVENT_INTERPROCESS | cuda_abi::CU_EVENT_DISABLE_TIMING;
        let e = crate::event::Event::imported(ctx, flags, shared);
        let e = p.events.insert(e);
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(event, crate::process::handle_of(&e)) }
    }
}

//! The shared file: creation race, layout validation, mapping, and the
//! process-shared robust mutex. This module and `sys` hold the crate's
//! `unsafe` code.
//!
//! # File layout (`<dir>/device<N>.shm`, layout version [`LAYOUT_VERSION`])
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4096 | [`Header`]: magic, layout version, sizes and offsets, ordinal, uuid, the mutex |
//! | 4096 | `size_of::<State>()` | [`State`]: config, scheduler, ledger, process and context tables, segment ring, event stamps |
//! | `queue_offset` (page aligned) | 64 × depth × 32 | the contexts' work queues ([`Item`]s), context c's at `c × depth` |
//!
//! Only integers are stored (no pointers, no Rust enums or bools), so any
//! process can map the file at any address and no bit pattern is undefined.

use std::cell::UnsafeCell;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::model::{Core, Item, SimCfg, State, MAX_QUEUE_DEPTH};
use crate::sched::MAX_CONTEXTS;
use crate::sys;

pub const MAGIC: [u8; 8] = *b"SIMGPU\0\x01";
/// Bump whenever any shared struct changes.
pub const LAYOUT_VERSION: u32 = 2;
pub const HEADER_SIZE: usize = 4096;
const PAGE: usize = 4096;

#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub ordinal: u32,
    pub layout_size: u64,
    pub state_offset: u64,
    pub state_size: u64,
    pub queue_offset: u64,
    pub queue_depth: u64,
    pub item_size: u64,
    pub uuid: [u8; 16],
    pub created_ns: u64,
    pub mutex: UnsafeCell<libc::pthread_mutex_t>,
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(std::mem::align_of::<State>() <= PAGE);
const _: () = assert!(std::mem::align_of::<Item>() <= PAGE);

/// Where things are in a file for a given queue depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub state_offset: usize,
    pub state_size: usize,
    pub queue_offset: usize,
    pub queue_items: usize,
    pub size: usize,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl Layout {
    pub fn for_depth(depth: u32) -> Layout {
        let state_size = size_of::<State>();
        let queue_offset = round_up(HEADER_SIZE + state_size, PAGE);
        let queue_items = MAX_CONTEXTS * depth as usize;
        let size = round_up(queue_offset + queue_items * size_of::<Item>(), PAGE);
        Layout {
            state_offset: HEADER_SIZE,
            state_size,
            queue_offset,
            queue_items,
            size,
        }
    }
}

/// A device file mapped into this process.
pub struct Shm {
    base: NonNull<u8>,
    layout: Layout,
    pub path: PathBuf,
    pub ordinal: u32,
    pub uuid: [u8; 16],
    /// The device's configuration (immutable once created).
    pub fixed: SimCfg,
    /// This process's slot in the process table (a hint, verified under the
    /// lock together with the pid, so a stale value after fork is harmless;
    /// `u32::MAX` until this attachment has registered or verified one).
    pub slot_hint: AtomicU32,
    /// The device file, open (close-on-exec) for probing the slot locks.
    probe: File,
}

/// Where the image locks of the process slots live in the device file:
/// one byte per slot, far past the end of the data (locks need no data).
const IMAGE_LOCK_BASE: i64 = 1 << 40;

fn ofd_lock(fd: i32, slot: u32, cmd: libc::c_int, l_type: libc::c_int) -> io::Result<libc::flock> {
    // SAFETY: a zeroed flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = IMAGE_LOCK_BASE + slot as i64;
    fl.l_len = 1;
    // SAFETY: an OFD lock command on an open descriptor with a valid flock
    // (l_pid 0, as OFD commands require).
    let rc = unsafe { libc::fcntl(fd, cmd, &mut fl) };
    if rc == 0 {
        Ok(fl)
    } else {
        Err(io::Error::last_os_error())
    }
}

// SAFETY: the mapping is shared memory that lives as long as `Shm`; all
// mutable access to it goes through the process-shared mutex (`lock`), and
// the header fields read without the lock are written once, before the magic
// is published under the creation flock.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    /// Takes the image lock of process slot `slot` for this process image:
    /// an open-file-description lock on a descriptor opened for it alone,
    /// close-on-exec and never closed, so the lock is released exactly when
    /// the image ends, by exit, kill or exec (as a real driver's
    /// close-on-exec device descriptors end its use of the GPU). Returns
    /// false if the lock could not be taken (then nobody relies on it).
    pub fn lock_image_slot(&self, slot: u32) -> bool {
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&self.path) else {
            return false;
        };
        if ofd_lock(f.as_raw_fd(), slot, libc::F_OFD_SETLK, libc::F_WRLCK).is_err() {
            return false;
        }
        // Kept open for the rest of the image's life: closing it would
        // release the lock.
        std::mem::forget(f);
        true
    }

    /// Whether some process image holds the lock of slot `slot` (None if
    /// the probe fails).
    pub fn image_slot_held(&self, slot: u32) -> Option<bool> {
        let fl = ofd_lock(
            self.probe.as_raw_fd(),
            slot,
            libc::F_OFD_GETLK,
            libc::F_WRLCK,
        )
        .ok()?;
        Some(fl.l_type != libc::F_UNLCK as libc::c_short)
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` describe a mapping created by `map` and not
        // unmapped elsewhere; no `Guard` borrows it any more (they borrow
        // `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.layout.size);
        }
    }
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

fn ctx_err(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An exclusive `flock` on the device file, released on drop.
struct FileLock<'f>(&'f File);

impl<'f> FileLock<'f> {
    fn take(f: &'f File) -> io::Result<FileLock<'f>> {
        loop {
            // SAFETY: flock on an open descriptor we own.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock(f));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own and locked.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn map(file: &File, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; the
    // kernel picks the address. The result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>())
        .ok_or_else(|| err(io::ErrorKind::Other, "mmap returned null".into()))
}

/// A stable identity per (directory, ordinal): FNV-1a over the canonical
/// directory and the ordinal, shaped as an RFC 9562 version-8 UUID.
pub fn make_uuid(dir: &Path, ordinal: u32) -> [u8; 16] {
    let key = format!("{}\0{}", dir.display(), ordinal);
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in key.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    u[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// What to do when the file does not exist yet.
pub struct Create {
    pub cfg: SimCfg,
}

impl Shm {
    /// Opens `<dir>/device<ordinal>.shm`: creates and initializes it when
    /// `create` is given and the file is new (or left uninitialized by a
    /// creator that crashed), else attaches to it after validation.
    pub fn open(dir: &Path, ordinal: u32, create: Option<Create>) -> io::Result<Shm> {
        let path = dir.join(format!("device{ordinal}.shm"));
        let file = match &create {
            Some(_) => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ctx_err(e, &format!("cannot create {}", dir.display())))?;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
            }
            None => OpenOptions::new().read(true).write(true).open(&path),
        }
        .map_err(|e| {
            ctx_err(
                e,
                &format!("cannot open simulated device file {}", path.display()),
            )
        })?;
        let _flock =
            FileLock::take(&file).map_err(|e| ctx_err(e, &format!("flock {}", path.display())))?;
        let size = file.metadata()?.len() as usize;
        let uninitialized = size == 0 || (size >= HEADER_SIZE && magic_is_zero(&file)?);
        match create {
            Some(c) if uninitialized => Self::initialize(&file, path, dir, ordinal, c.cfg, size),
            None if uninitialized => Err(err(
                io::ErrorKind::NotFound,
                format!(
                    "{} exists but was never initialized (no process has opened the device yet)",
                    path.display()
                ),
            )),
            _ => Self::attach(&file, path, ordinal, size),
        }
    }

    fn initialize(
        file: &File,
        path: PathBuf,
        dir: &Path,
        ordinal: u32,
        cfg: SimCfg,
        old_size: usize,
    ) -> io::Result<Shm> {
        let depth = cfg.queue_depth.clamp(1, MAX_QUEUE_DEPTH);
        let layout = Layout::for_depth(depth);
        if old_size != 0 {
            // Left half-made by a creator that died: start from zeros.
            file.set_len(0)?;
        }
        reserve(file, layout.size).map_err(|e| {
            ctx_err(
                e,
                &format!(
                    "cannot reserve {} bytes for {} (is the file system, e.g. /dev/shm, large enough? \
                     SIMCUDA_DIR and SIMCUDA_QUEUE_DEPTH change where and how much)",
                    layout.size,
                    path.display()
                ),
            )
        })?;
        let base = map(file, layout.size)?;
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let uuid = make_uuid(&canonical, ordinal);
        let mut shm = Shm {
            base,
            layout,
            path,
            ordinal,
            uuid,
            fixed: SimCfg::default(),
            slot_hint: AtomicU32::new(u32::MAX),
            probe: file.try_clone()?,
        };
        let h = shm.header_ptr();
        // SAFETY: we hold the creation flock, so no other process reads or
        // writes the file until the magic is published; the mapping is
        // `layout.size` bytes, page aligned, and zero-filled (new file), which
        // is a valid `Header` and `State`.
        unsafe {
            (*h).version = LAYOUT_VERSION;
            (*h).ordinal = ordinal;
            (*h).layout_size = layout.size as u64;
            (*h).state_offset = layout.state_offset as u64;
            (*h).state_size = layout.state_size as u64;
            (*h).queue_offset = layout.queue_offset as u64;
            (*h).queue_depth = depth as u64;
            (*h).item_size = size_of::<Item>() as u64;
            (*h).uuid = uuid;
            (*h).created_ns = sys::now_ns();
            init_robust_mutex((*h).mutex.get())?;
            let st = &mut *shm.state_ptr();
            st.init(
                SimCfg {
                    queue_depth: depth,
                    ..cfg
                },
                sys::now_ns(),
            );
            shm.fixed = st.cfg;
        }
        fence(Ordering::Release);
        // SAFETY: as above; the magic is written last, so a reader that sees
        // it sees an initialized file.
        unsafe {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*h).magic), MAGIC);
        }
        Ok(shm)
    }

    fn attach(file: &File, path: PathBuf, ordinal: u32, size: usize) -> io::Result<Shm> {
        let bad = |msg: String| {
            err(
                io::ErrorKind::InvalidData,
                format!("{}: {msg}", path.display()),
            )
        };
        let advice = "remove it (or use another SIMCUDA_DIR) to start a fresh device";
        if size < HEADER_SIZE {
            return Err(bad(format!(
                "{size} bytes is too small for a simgpu device file; {advice}"
            )));
        }
        let base = map(file, size)?;
        // A temporary owner of the mapping so every error path unmaps it.
        let probe = Shm {
            base,
            layout: Layout {
                state_offset: 0,
                state_size: 0,
                queue_offset: 0,
                queue_items: 0,
                size,
            },
            path: path.clone(),
            ordinal,
            uuid: [0; 16],
            fixed: SimCfg::default(),
            slot_hint: AtomicU32::new(u32::MAX),
            probe: file.try_clone()?,
        };
        let h = probe.header_ptr();
        // SAFETY: the mapping holds at least HEADER_SIZE bytes, and we hold
        // the flock, so the header's plain fields are not being written.
        let (magic, version, depth, lsize, soff, ssize, qoff, isize, ord, uuid) = unsafe {
            (
                (*h).magic,
                (*h).version,
                (*h).queue_depth,
                (*h).layout_size,
                (*h).state_offset,
                (*h).state_size,
                (*h).queue_offset,
                (*h).item_size,
                (*h).ordinal,
                (*h).uuid,
            )
        };
        if magic != MAGIC {
            return Err(bad(format!(
                "not a simgpu device file (magic {magic:02x?}, expected {MAGIC:02x?}); {advice}"
            )));
        }
        if version != LAYOUT_VERSION {
            return Err(bad(format!(
                "layout version {version}, but this simgpu uses layout version {LAYOUT_VERSION}; {advice}"
            )));
        }
        if depth == 0 || depth > MAX_QUEUE_DEPTH as u64 {
            return Err(bad(format!("queue depth {depth} out of range; {advice}")));
        }
        let layout = Layout::for_depth(depth as u32);
        let found = (lsize, soff, ssize, qoff, isize);
        let expected = (
            layout.size as u64,
            layout.state_offset as u64,
            layout.state_size as u64,
            layout.queue_offset as u64,
            size_of::<Item>() as u64,
        );
        if found != expected {
            return Err(bad(format!(
                "layout (size, state offset, state size, queue offset, item size) = {found:?}, \
                 but this simgpu build expects {expected:?} for queue depth {depth}: \
                 written by an incompatible build; {advice}"
            )));
        }
        if size != layout.size {
            return Err(bad(format!(
                "file is {size} bytes, its header says {}; {advice}",
                layout.size
            )));
        }
        if ord != ordinal {
            return Err(bad(format!(
                "file holds device {ord}, not device {ordinal}; {advice}"
            )));
        }
        let mut shm = probe;
        shm.layout = layout;
        shm.uuid = uuid;
        let mut g = shm.lock()?;
        let core = g.core();
        let fixed = SimCfg {
            queue_depth: core.depth() as u32,
            timeslice_ns: core
                .timing()
                .timeslice_ns
                .max(crate::sched::MIN_TIMESLICE_NS),
            ..core.st.cfg
        };
        drop(g);
        shm.fixed = fixed;
        Ok(shm)
    }

    fn header_ptr(&self) -> *mut Header {
        self.base.as_ptr().cast::<Header>()
    }

    fn state_ptr(&self) -> *mut State {
        // SAFETY: `state_offset + state_size <= size` (validated layout).
        unsafe {
            self.base
                .as_ptr()
                .add(self.layout.state_offset)
                .cast::<State>()
        }
    }

    fn queue_ptr(&self) -> *mut Item {
        // SAFETY: `queue_offset + queue_items * size_of::<Item>() <= size`.
        unsafe {
            self.base
                .as_ptr()
                .add(self.layout.queue_offset)
                .cast::<Item>()
        }
    }

    /// Locks the device. A previous holder that died makes the lock
    /// `EOWNERDEAD`: the lock is made consistent and the derived state
    /// repaired before it is handed out.
    pub fn lock(&self) -> io::Result<Guard<'_>> {
        // SAFETY: the header (with its mutex) is inside the mapping; the
        // mutex was initialized process-shared and robust before the magic
        // was published.
        let m = unsafe { (*self.header_ptr()).mutex.get() };
        // SAFETY: `m` points to an initialized pthread mutex in shared memory.
        let rc = unsafe { libc::pthread_mutex_lock(m) };
        match rc {
            0 => Ok(Guard {
                shm: self,
                _not_send: PhantomData,
            }),
            libc::EOWNERDEAD => {
                // SAFETY: we own the mutex (EOWNERDEAD hands it over).
                let rc = unsafe { libc::pthread_mutex_consistent(m) };
                let mut g = Guard {
                    shm: self,
                    _not_send: PhantomData,
                };
                if rc != 0 {
                    return Err(ctx_err(
                        io::Error::from_raw_os_error(rc),
                        "pthread_mutex_consistent",
                    ));
                }
                g.core().repair(sys::now_ns());
                Ok(g)
            }
            e => Err(ctx_err(
                io::Error::from_raw_os_error(e),
                &format!("cannot lock simulated device {}", self.path.display()),
            )),
        }
    }
}

fn magic_is_zero(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut m = [0u8; 8];
    file.read_exact_at(&mut m, 0)?;
    Ok(m == [0u8; 8])
}

/// Reserves the file's blocks so that a full /dev/shm fails here, cleanly,
/// rather than with SIGBUS on a later page fault in some tenant process.
fn reserve(file: &File, len: usize) -> io::Result<()> {
    // SAFETY: posix_fallocate on an open descriptor; returns an errno value.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => file.set_len(len as u64),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// # Safety
/// `m` must point to writable memory for a `pthread_mutex_t` that no thread
/// is using.
unsafe fn init_robust_mutex(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            Err(ctx_err(io::Error::from_raw_os_error(rc), what))
        }
    };
    // SAFETY: `attr` is initialized by pthread_mutexattr_init before use and
    // destroyed after; `m` is valid per this function's contract.
    unsafe {
        check(
            libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            "pthread_mutexattr_init",
        )?;
        let r = check(
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
            "pthread_mutexattr_setpshared",
        )
        .and_then(|_| {
            check(
                libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST),
                "pthread_mutexattr_setrobust",
            )
        })
        .and_then(|_| {
            check(
                libc::pthread_mutex_init(m, attr.as_ptr()),
                "pthread_mutex_init",
            )
        });
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        r
    }
}

/// The device lock, held by the current thread; unlocks on drop.
pub struct Guard<'a> {
    shm: &'a Shm,
    /// A pthread mutex must be unlocked by the thread that locked it.
    _not_send: PhantomData<*mut ()>,
}

impl Guard<'_> {
    /// The locked state.
    pub fn core(&mut self) -> Core<'_> {
        // SAFETY: we hold the process-shared mutex, so no other thread or
        // process accesses the state or queues; the pointers are inside the
        // validated mapping, aligned (page-aligned offsets), and every bit
        // pattern is a valid `State`/`Item` (integers only). The borrow is
        // tied to `&mut self`, so at most one `Core` exists per guard.
        unsafe {
            let st = &mut *self.shm.state_ptr();
            let q =
                std::slice::from_raw_parts_mut(self.shm.queue_ptr(), self.shm.layout.queue_items);
            Core::new(st, q)
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex when creating the guard.
        unsafe {
            libc::pthread_mutex_unlock((*self.shm.header_ptr()).mutex.get());
        }
    }
}

/// A zeroed `State` on the heap, for unit tests of the pure core.
#[cfg(test)]
pub fn zeroed_state() -> Box<State> {
    let layout = std::alloc::Layout::new::<State>();
    // SAFETY: `State` has a non-zero size; all-zero bytes are a valid
    // `State` (integers only), and the box takes ownership of an allocation
    // made with `State`'s layout by the global allocator.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<State>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "simgpu-shm-{}-{}-{}",
            std::process::id(),
            name,
            sys::now_ns()
        ))
    }

    fn cfg() -> SimCfg {
        SimCfg {
            mem_total: 1 << 20,
            timeslice_ns: 1_024_000,
            switch_ns: 90_000,
            queue_depth: 16,
            _pad: 0,
        }
    }

    #[test]
    fn layout_is_page_aligned_and_sized_by_depth() {
        let a = Layout::for_depth(16);
        let b = Layout::for_depth(1024);
        assert_eq!(a.queue_offset % PAGE, 0);
        assert_eq!(a.size % PAGE, 0);
        assert_eq!(b.size - a.size, 64 * (1024 - 16) * size_of::<Item>());
        assert!(a.state_offset + a.state_size <= a.queue_offset);
    }

    #[test]
    fn a_holder_that_dies_leaves_a_lock_that_is_repaired() {
        let dir = tmp("ownerdead");
        let shm = Shm::open(&dir, 0, Some(Create { cfg: cfg() })).unwrap();
        {
            let mut g = shm.lock().unwrap();
            let mut core = g.core();
            let p = core.register_for_test(0, 4242, 0, 0).unwrap();
            core.mem_charge(p, 300).unwrap();
        }
        // SAFETY: the child only locks, writes the mapping and _exits
        // (no allocation, no locks other than the device's).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if let Ok(mut g) = shm.lock() {
                // Dies mid-update, holding the lock.
                g.core().st.ledger.used = 999_999;
                std::mem::forget(g);
            }
            // SAFETY: ends the child without running the parent's cleanup.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        // EOWNERDEAD: made consistent and repaired; the lock works after.
        {
            let mut g = shm.lock().unwrap();
            assert_eq!(g.core().st.ledger.used, 300);
        }
        drop(shm.lock().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn uuid_is_stable_and_distinct() {
        let a = make_uuid(Path::new("/dev/shm/x"), 0);
        assert_eq!(a, make_uuid(Path::new("/dev/shm/x"), 0));
        assert_ne!(a, make_uuid(Path::new("/dev/shm/x"), 1));
        assert_ne!(a, make_uuid(Path::new("/dev/shm/y"), 0));
        assert_eq!(a[6] >> 4, 8);
    }
}

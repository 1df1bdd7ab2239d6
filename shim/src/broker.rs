//! The shim's side of the node broker (`tslice-broker`).
//!
//! Where: `TSLICE_BROKER` if set, else `/run/tslice/broker.sock` if it
//! exists, else no broker (standalone, limits from the environment). A
//! broker that is named but cannot be reached is refused unless
//! `TSLICE_NO_BROKER=standalone` (`refuse`, the default, fails the process's
//! CUDA calls closed with one line saying why). On a node that fixes its
//! broker (a root-owned `tslice-broker.path` file beside the loaded
//! `libtslice.so`, as the Kubernetes DaemonSet installs it in a directory
//! pods mount read-only), the process's environment has no say: that
//! broker, and refusal when it cannot be reached.
//!
//! When: at the process's first successful `cuInit`, never before (a
//! process that never initialises CUDA starts no thread and holds no
//! connection; NVML in such a process asks the broker for its tenant's
//! view of a device on a short connection of its own: [`view`]). Then one
//! thread reads the broker's messages: answers to reservations, and
//! reclaims (return unused reservation). If the broker
//! goes away, the process keeps working with its last budgets and what it
//! has reserved, and the thread reconnects, reporting what the process holds
//! so the broker rebuilds its ledger exactly.
//!
//! What: memory is reserved from the tenant's ledger in chunks (most
//! allocations need no round trip; unused reservation beyond a chunk goes
//! back when memory is freed); the compute budget is read from a shared page
//! the broker writes (an atomic load on the launch path); the process
//! reports its counters (launches, GPU time, memory) in a page of its own.
//!
//! Fork: the child's state is rebuilt (its next `cuInit` connects anew as a
//! process of the same tenant: the kernel says so), and the descriptors it
//! inherited are closed by the fork handler.

use crate::log;
use std::ffi::c_void;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tslice_proto::page::{
    BudgetPage, ProcessPage, BUDGET_LEN, BUDGET_MAGIC, PAGE_VERSION, PROCESS_LEN, PROCESS_MAGIC,
};
use tslice_proto::{FrameBuf, Hello, HelloDevice, Msg, View, HELLO_RECONNECT};

/// The default socket of a node broker.
pub const DEFAULT_SOCKET: &str = "/run/tslice/broker.sock";
/// How long an allocation that needs a reservation waits for a broker that
/// is away (restarting) before it is refused.
const AWAY_WAIT: Duration = Duration::from_secs(2);
/// How long a reservation waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Descriptors of the current connection (socket, its reader, the process
/// page), closed in a forked child (which must not speak for its parent).
/// A slot is cleared before its descriptor is closed, so a child never
/// closes a number the parent reused.
static INHERITED: [AtomicI32; 3] = [AtomicI32::new(-1), AtomicI32::new(-1), AtomicI32::new(-1)];
const FD_SOCK: usize = 0;
const FD_READER: usize = 1;
const FD_PAGE: usize = 2;

/// In a forked child (async-signal-safe: `close` only).
pub fn after_fork_in_child() {
    for fd in &INHERITED {
        let f = fd.swap(-1, Ordering::AcqRel);
        if f >= 0 {
            // SAFETY: closes a descriptor the parent's broker connection
            // owned; the child's state never uses it.
            unsafe { libc::close(f) };
        }
    }
}

/// What to do when the broker cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBroker {
    Refuse,
    Standalone,
}

/// The file beside the shim that fixes the node's broker.
pub const NODE_BROKER_FILE: &str = "tslice-broker.path";

/// The broker the node fixes: the socket path in [`NODE_BROKER_FILE`] next
/// to the loaded library, if that file is owned by root and writable by
/// nobody else (a tenant can neither write nor replace it).
fn node_broker() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: Dl_info is plain pointers and integers; all zeroes is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr with the address of a function of this library and a
    // valid out-structure; the name it returns lives as long as the library.
    let found = unsafe { libc::dladdr(node_broker as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated path owned by the dynamic loader.
    let lib = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let lib = std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(lib.to_bytes()),
    );
    let file = lib.parent()?.join(NODE_BROKER_FILE);
    let meta = std::fs::metadata(&file).ok()?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        log::warn!(
            "{} is not owned by root or is writable by others: ignored",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let path = text.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Where to connect, and what to do if nobody answers. None: standalone.
pub fn target() -> Result<Option<(PathBuf, NoBroker)>, String> {
    if let Some(p) = node_broker() {
        if std::env::var_os("TSLICE_BROKER").is_some()
            || std::env::var_os("TSLICE_NO_BROKER").is_some()
        {
            log::warn!(
                "TSLICE_BROKER and TSLICE_NO_BROKER are ignored: this node's broker is {}",
                p.display()
            );
        }
        return Ok(Some((p, NoBroker::Refuse)));
    }
    let policy = match std::env::var("TSLICE_NO_BROKER") {
        Err(_) => NoBroker::Refuse,
        Ok(v) => match v.trim() {
            "refuse" | "" => NoBroker::Refuse,
            "standalone" => NoBroker::Standalone,
            _ => {
                return Err(format!(
                    "TSLICE_NO_BROKER={} is invalid; accepted: refuse, standalone",
                    tslice_policy::quota::clip(&v)
                ))
            }
        },
    };
    if let Some(p) = std::env::var_os("TSLICE_BROKER").filter(|p| !p.is_empty()) {
        return Ok(Some((PathBuf::from(p), policy)));
    }
    let default = PathBuf::from(DEFAULT_SOCKET);
    Ok(default.exists().then_some((default, policy)))
}

/// How long a view request may take, all told, before NVML is shown
/// unchanged.
const VIEW_WAIT: Duration = Duration::from_secs(1);
/// After a view request failed, how long the process shows NVML unchanged
/// before it asks again (a broker that is away or stuck costs one wait, not
/// one per NVML call).
const VIEW_BACKOFF_NS: u64 = 5_000_000_000;
/// `real::now_ns` before which no view is asked for (0: ask).
static VIEW_AFTER_NS: AtomicU64 = AtomicU64::new(0);

/// Asks the broker at `path`, on a connection of its own that it closes
/// again, what this process's tenant has on the device `uuid` (NVML in a
/// process that is not connected, or for the tenant's process list);
/// `ordinal` is the device's CUDA ordinal, `u32::MAX` if unknown. No thread
/// and no CUDA: a blocking exchange of at most [`VIEW_WAIT`] in all. None
/// when the broker cannot be reached in time, refuses, or is too old to
/// know the request (it closes the connection); then none is asked for
/// [`VIEW_BACKOFF_NS`].
pub fn view(path: &std::path::Path, uuid: [u8; 16], total: u64, ordinal: u32) -> Option<View> {
    if crate::real::now_ns() < VIEW_AFTER_NS.load(Ordering::Relaxed) {
        return None;
    }
    let v = ask_view(path, uuid, total, ordinal);
    if v.is_none() {
        VIEW_AFTER_NS.store(
            crate::real::now_ns().saturating_add(VIEW_BACKOFF_NS),
            Ordering::Relaxed,
        );
    }
    v
}

fn ask_view(path: &std::path::Path, uuid: [u8; 16], total: u64, ordinal: u32) -> Option<View> {
    let deadline = Instant::now() + VIEW_WAIT;
    let sock = connect_within(path, VIEW_WAIT).ok()?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    sock.set_write_timeout(Some(left)).ok()?;
    let req = Msg::ViewRequest {
        uuid,
        total,
        ordinal,
    };
    send_all(&sock, &req.encode()).ok()?;
    let mut fb = FrameBuf::new();
    let mut buf = [0u8; 4096];
    loop {
        match fb.next_msg() {
            Ok(Some(Msg::View(v))) => return Some(v),
            Ok(Some(Msg::Refused { reason })) => {
                log::debug!("the broker refused a device view: {reason}");
                return None;
            }
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        match (&sock).read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => fb.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// A Unix stream socket connected to `path` within `wait`: its send timeout
/// (`SO_SNDTIMEO`, set before `connect`) also bounds a connect that waits
/// for room in a listener's backlog, which a stuck broker never makes.
fn connect_within(path: &std::path::Path, wait: Duration) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain integers and bytes; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created, owned by nothing else.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    sock.set_write_timeout(Some(wait))?;
    // SAFETY: a valid address of the stated length.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Writes all of `b` without ever raising SIGPIPE (a broker that went away
/// must not kill the process: `MSG_NOSIGNAL`).
fn send_all(sock: &UnixStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        // SAFETY: a live buffer of its stated length.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        b = &b[n as usize..];
    }
    Ok(())
}

/// One device as the broker is told about it.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub uuid: [u8; 16],
    pub total: u64,
}

/// A shared mapping (never unmapped: a budget page stays readable for as
/// long as anything might read it).
struct Map(*mut c_void);

fn map(fd: RawFd, len: usize, writable: bool) -> io::Result<*mut c_void> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh shared mapping of `len` bytes of an open descriptor;
    // the kernel picks the address; the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p)
    }
}

/// The process's own page, shared with whichever broker it talks to.
fn new_process_page() -> io::Result<(OwnedFd, Map)> {
    // SAFETY: memfd_create with a static name and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"tslice-process".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizes the memfd we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), PROCESS_LEN as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Sealed at its size: the broker maps it, and refuses a page that could
    // shrink under its mapping.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: adds seals to the memfd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let p = map(fd.as_raw_fd(), PROCESS_LEN, true)?;
    Ok((fd, Map(p)))
}

/// Sends a frame with a descriptor attached (SCM_RIGHTS), then the rest.
fn send_with_fd(sock: &UnixStream, frame: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut c_void,
        iov_len: frame.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; the fields set point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg has a control buffer of CMSG_SPACE(one fd) bytes, so the
    // first header exists and has room for one descriptor.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
    }
    // SAFETY: a connected socket and the message built above.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    send_all(sock, &frame[n as usize..])
}

/// Reads until a frame is buffered, keeping a descriptor if one arrives.
fn recv_with_fd(sock: &UnixStream, fb: &mut FrameBuf, fd: &mut Option<OwnedFd>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; the fields set point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: a connected socket and buffers that outlive the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the broker closed the connection",
        ));
    }
    // SAFETY: walks the control headers the kernel wrote into `cbuf`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let got = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if fd.is_none() {
                        *fd = Some(got);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    fb.push(&buf[..n as usize]);
    Ok(())
}

#[derive(Default)]
struct Waiting {
    /// The request in flight and its answer once it came.
    req: u32,
    answer: Option<u64>,
    /// Requests given up on (no answer in time) and their device: a grant
    /// that comes after all goes back at once, or the tenant's ledger would
    /// count it for this process until it exits.
    abandoned: Vec<(u32, usize)>,
}

/// Abandoned requests remembered (older ones are forgotten: their grants,
/// if any come, stay counted until the process exits).
const ABANDONED: usize = 16;

/// The connection to the broker, for the rest of the process's life.
pub struct Broker {
    path: PathBuf,
    pub devices: Vec<Device>,
    /// The current socket (None while reconnecting).
    sock: Mutex<Option<UnixStream>>,
    /// Signalled when an answer arrives or the connection changes.
    changed: Condvar,
    waiting: Mutex<Waiting>,
    /// One reservation in flight at a time.
    one: Mutex<()>,
    next_req: AtomicU32,
    connected: AtomicBool,
    budget: AtomicPtr<BudgetPage>,
    process: &'static ProcessPage,
    process_fd: OwnedFd,
}

// SAFETY: the raw pages are shared memory accessed only through atomics;
// everything else is behind locks or atomic.
unsafe impl Send for Broker {}
// SAFETY: as above.
unsafe impl Sync for Broker {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Broker {
    /// Connects (the handshake) and starts the reader thread.
    pub fn connect(path: PathBuf, devices: Vec<Device>) -> io::Result<&'static Broker> {
        let (process_fd, pmap) = new_process_page()?;
        // SAFETY: the mapping is PROCESS_LEN >= size_of::<ProcessPage>()
        // bytes, page-aligned, never unmapped, zero-initialised (a valid
        // value of every atomic), accessed only through atomics.
        let process: &'static ProcessPage = unsafe { &*(pmap.0 as *const ProcessPage) };
        process.version.store(PAGE_VERSION, Ordering::Relaxed);
        process
            .devices
            .store(devices.len() as u32, Ordering::Relaxed);
        process.magic.store(PROCESS_MAGIC, Ordering::Release);
        let b: &'static Broker = Box::leak(Box::new(Broker {
            path,
            devices,
            sock: Mutex::new(None),
            changed: Condvar::new(),
            waiting: Mutex::new(Waiting::default()),
            one: Mutex::new(()),
            next_req: AtomicU32::new(1),
            connected: AtomicBool::new(false),
            budget: AtomicPtr::new(std::ptr::null_mut()),
            process,
            process_fd,
        }));
        INHERITED[FD_PAGE].store(b.process_fd.as_raw_fd(), Ordering::Release);
        let (sock, fb) = b.handshake(false, |_| (0, 0))?;
        let reader = sock.try_clone()?;
        INHERITED[FD_SOCK].store(sock.as_raw_fd(), Ordering::Release);
        INHERITED[FD_READER].store(reader.as_raw_fd(), Ordering::Release);
        *lock(&b.sock) = Some(sock);
        b.connected.store(true, Ordering::Release);
        // A small stack: the loop holds a 4 KiB buffer and little else.
        std::thread::Builder::new()
            .name("tslice-broker".into())
            .stack_size(256 << 10)
            .spawn(move || b.read_loop(reader, fb))?;
        Ok(b)
    }

    /// Hello (with the process page) → Welcome (with the budget page).
    /// `holdings(ordinal)` is what the process holds there (granted, used).
    fn handshake(
        &self,
        reconnect: bool,
        holdings: impl Fn(usize) -> (u64, u64),
    ) -> io::Result<(UnixStream, FrameBuf)> {
        let sock = UnixStream::connect(&self.path)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let hello = Msg::Hello(Hello {
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() } as u32,
            flags: if reconnect { HELLO_RECONNECT } else { 0 },
            devices: self
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let (granted, used) = holdings(i);
                    HelloDevice {
                        uuid: d.uuid,
                        total: d.total,
                        granted,
                        used,
                    }
                })
                .collect(),
        });
        send_with_fd(&sock, &hello.encode(), self.process_fd.as_raw_fd())?;
        let mut fb = FrameBuf::new();
        let mut fd = None;
        let tenant = loop {
            match fb
                .next_msg()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                Some(Msg::Welcome { tenant, .. }) => break tenant,
                Some(Msg::Refused { reason }) => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
                }
                Some(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected Welcome, got {other:?}"),
                    ))
                }
                None => recv_with_fd(&sock, &mut fb, &mut fd)?,
            }
        };
        let fd = fd.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "Welcome came without a budget page",
            )
        })?;
        let p = map(fd.as_raw_fd(), BUDGET_LEN, false)?;
        // SAFETY: BUDGET_LEN >= size_of::<BudgetPage>() bytes, page-aligned,
        // never unmapped, only read through atomics.
        let page = unsafe { &*(p as *const BudgetPage) };
        if page.magic.load(Ordering::Acquire) != BUDGET_MAGIC
            || page.version.load(Ordering::Relaxed) != PAGE_VERSION
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a tslice budget page of this version",
            ));
        }
        self.budget.store(p as *mut BudgetPage, Ordering::Release);
        sock.set_read_timeout(None)?;
        log::info!(
            "connected to the broker at {} as a process of tenant {tenant:?}",
            self.path.display()
        );
        Ok((sock, fb))
    }

    /// The budget page (the last broker's, while reconnecting).
    pub fn budget(&self) -> &BudgetPage {
        // SAFETY: set by the handshake before the broker is published, and
        // only ever replaced by another such mapping (never unmapped).
        unsafe { &*self.budget.load(Ordering::Acquire) }
    }

    pub fn process(&self) -> &ProcessPage {
        self.process
    }

    fn read_loop(&'static self, mut sock: UnixStream, mut fb: FrameBuf) {
        let mut buf = [0u8; 4096];
        loop {
            let msg = match fb.next_msg() {
                Ok(Some(m)) => Some(m),
                Ok(None) => match sock.read(&mut buf) {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        fb.push(&buf[..n]);
                        continue;
                    }
                },
                Err(e) => {
                    log::warn!("the broker sent a bad frame ({e}); reconnecting");
                    None
                }
            };
            match msg {
                Some(Msg::Grant { req, bytes }) => {
                    let mut w = lock(&self.waiting);
                    if let Some(k) = w.abandoned.iter().position(|(r, _)| *r == req) {
                        let (_, dev) = w.abandoned.swap_remove(k);
                        drop(w);
                        self.release(dev, bytes);
                    } else if w.req == req {
                        w.answer = Some(bytes);
                        self.changed.notify_all();
                    }
                }
                Some(Msg::Reclaim { dev }) => crate::state::shim().broker_reclaim(dev as usize),
                Some(other) => log::debug!("ignoring {other:?} from the broker"),
                None => (sock, fb) = self.reconnect(),
            }
        }
    }

    /// The broker went away: keep the last budgets, try again with backoff,
    /// and report what the process holds so the ledger is rebuilt exactly.
    fn reconnect(&'static self) -> (UnixStream, FrameBuf) {
        self.connected.store(false, Ordering::Release);
        // The loop's reader is dropped when it is replaced, after this.
        INHERITED[FD_READER].store(-1, Ordering::Release);
        if let Some(old) = lock(&self.sock).take() {
            INHERITED[FD_SOCK].store(-1, Ordering::Release);
            drop(old);
        }
        self.changed.notify_all();
        log::warn!(
            "lost the broker at {}; working with the last budgets until it is back",
            self.path.display()
        );
        // A restarted broker waits about a second for its processes to come
        // back (tslice-broker's RECOVERY) before it grants anyone memory.
        let mut backoff = Duration::from_millis(20);
        loop {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(250));
            let s = crate::state::shim();
            match self.handshake(true, |i| s.broker_holdings(i)) {
                Ok((sock, fb)) => {
                    let Ok(reader) = sock.try_clone() else {
                        continue;
                    };
                    INHERITED[FD_SOCK].store(sock.as_raw_fd(), Ordering::Release);
                    INHERITED[FD_READER].store(reader.as_raw_fd(), Ordering::Release);
                    *lock(&self.sock) = Some(sock);
                    self.connected.store(true, Ordering::Release);
                    self.changed.notify_all();
                    log::warn!("reconnected to the broker at {}", self.path.display());
                    // Anything after the Welcome is in `fb`, for the loop.
                    return (reader, fb);
                }
                Err(e) => log::debug!("the broker is not back yet: {e}"),
            }
        }
    }

    fn send(&self, m: &Msg) -> io::Result<()> {
        let g = lock(&self.sock);
        match g.as_ref() {
            Some(mut s) => s.write_all(&m.encode()),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "reconnecting")),
        }
    }

    /// Reserves `bytes` on the process's device `dev`: what was granted (at
    /// least `bytes`), or None (the tenant's limit, or no broker in time).
    pub fn reserve(&self, dev: usize, bytes: u64) -> Option<u64> {
        let _one = lock(&self.one);
        let deadline = Instant::now() + AWAY_WAIT;
        // A broker that is away may come back soon (a restart).
        let mut w = lock(&self.waiting);
        while !self.connected.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            w = self
                .changed
                .wait_timeout(w, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        w.req = req;
        w.answer = None;
        drop(w);
        self.send(&Msg::Reserve {
            req,
            dev: dev as u32,
            bytes,
        })
        .ok()?;
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut w = lock(&self.waiting);
        loop {
            if let Some(a) = w.answer.take() {
                return (a > 0).then_some(a);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.connected.load(Ordering::Acquire) {
                if w.abandoned.len() >= ABANDONED {
                    w.abandoned.remove(0);
                }
                w.abandoned.push((req, dev));
                return None;
            }
            w = self
                .changed
                .wait_timeout(w, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Returns unused reservation (best effort: while the broker is away,
    /// the reconnect reports what the process holds instead).
    pub fn release(&self, dev: usize, bytes: u64) {
        if bytes > 0 {
            let _ = self.send(&Msg::Release {
                dev: dev as u32,
                bytes,
            });
        }
    }
}

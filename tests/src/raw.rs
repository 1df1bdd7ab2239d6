//! A broker client without CUDA, speaking the wire protocol directly: what
//! the shim does, and what a hostile process could do instead (lie about
//! its device, hold reservations, truncate its page, never read). Used by
//! the broker tests, in the test process and (through `broker_client`) in
//! processes placed in a tenant's cgroup or run as another user.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use tslice_proto::page::{PAGE_VERSION, PROCESS_LEN, PROCESS_MAGIC};
use tslice_proto::{FrameBuf, Hello, HelloDevice, Msg, HELLO_RECONNECT};

/// A connected raw client.
pub struct RawClient {
    pub sock: UnixStream,
    fb: FrameBuf,
    /// The process page sent with Hello.
    pub page: Option<OwnedFd>,
    /// The budget page received with Welcome.
    pub budget: Option<OwnedFd>,
    next_req: u32,
    /// Reservation held on device 0 (grants less releases).
    pub held: u64,
    /// Answer Reclaim by returning everything held (as the shim returns
    /// what it does not use).
    pub answer_reclaims: bool,
}

/// How the Hello looks.
#[derive(Clone, Debug)]
pub struct HelloSpec {
    pub uuid: [u8; 16],
    pub total: u64,
    /// Some: a reconnect claiming to hold this much.
    pub reconnect: Option<u64>,
    /// Send a process page, sealed against shrinking (as the shim does) or not.
    pub page: Option<bool>,
}

impl Default for HelloSpec {
    fn default() -> Self {
        HelloSpec {
            uuid: [9; 16],
            total: 1 << 30,
            reconnect: None,
            page: Some(true),
        }
    }
}

/// A process page of the agreed size and header, optionally sealed.
pub fn process_page(sealed: bool) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static name and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"tslice-test-page".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizes and maps the memfd we own, writes its header words,
    // unmaps it.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), PROCESS_LEN as libc::off_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            PROCESS_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let words = p as *mut u32;
        *words.add(1) = PAGE_VERSION;
        *words = PROCESS_MAGIC;
        libc::munmap(p, PROCESS_LEN);
        if sealed
            && libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Sends `frame` with `fd` attached (SCM_RIGHTS).
pub fn send_with_fd(sock: &UnixStream, frame: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: a msghdr pointing at live buffers, with one SCM_RIGHTS header
    // that fits `cbuf`.
    let n = unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr().cast();
        m.msg_controllen = libc::CMSG_SPACE(4) as _;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
        libc::sendmsg(sock.as_raw_fd(), &m, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut s = sock;
    s.write_all(&frame[n as usize..])
}

/// Reads once into `fb`, keeping the first descriptor that arrives.
pub fn recv_with_fd(
    sock: &UnixStream,
    fb: &mut FrameBuf,
    fd: &mut Option<OwnedFd>,
) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: a msghdr pointing at live buffers; the control headers the
    // kernel writes are walked within `cbuf`.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut m, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let c = libc::CMSG_FIRSTHDR(&m);
        if !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
            let got =
                OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd));
            fd.get_or_insert(got);
        }
        fb.push(&buf[..n as usize]);
    }
    Ok(())
}

impl RawClient {
    /// Connects and says nothing yet.
    pub fn connect(socket: &Path) -> io::Result<RawClient> {
        let sock = UnixStream::connect(socket)?;
        // A broker that never answers fails the test instead of hanging it.
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        Ok(RawClient {
            sock,
            fb: FrameBuf::new(),
            page: None,
            budget: None,
            next_req: 1,
            held: 0,
            answer_reclaims: true,
        })
    }

    /// Hello → Welcome: the tenant, or `Err` with the refusal.
    pub fn hello(&mut self, spec: &HelloSpec) -> io::Result<String> {
        let frame = Msg::Hello(Hello {
            pid: std::process::id(),
            flags: if spec.reconnect.is_some() {
                HELLO_RECONNECT
            } else {
                0
            },
            devices: vec![HelloDevice {
                uuid: spec.uuid,
                total: spec.total,
                granted: spec.reconnect.unwrap_or(0),
                used: 0,
            }],
        })
        .encode();
        match spec.page {
            Some(sealed) => {
                let page = process_page(sealed)?;
                send_with_fd(&self.sock, &frame, page.as_raw_fd())?;
                self.page = Some(page);
            }
            None => (&self.sock).write_all(&frame)?,
        }
        self.held = spec.reconnect.unwrap_or(0);
        let mut fd = None;
        loop {
            match self.fb.next_msg().map_err(io::Error::other)? {
                Some(Msg::Welcome { tenant, .. }) => {
                    self.budget = fd;
                    return Ok(tenant);
                }
                Some(Msg::Refused { reason }) => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
                }
                Some(other) => return Err(io::Error::other(format!("unexpected {other:?}"))),
                None => recv_with_fd(&self.sock, &mut self.fb, &mut fd)?,
            }
        }
    }

    /// The next message (None: the broker closed the connection).
    pub fn next_msg(&mut self) -> io::Result<Option<Msg>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.fb.next_msg().map_err(io::Error::other)? {
                return Ok(Some(m));
            }
            match self.sock.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.fb.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a Reserve without waiting; returns its request number.
    pub fn send_reserve(&mut self, bytes: u64) -> io::Result<u32> {
        let req = self.next_req;
        self.next_req += 1;
        self.sock
            .write_all(&Msg::Reserve { req, dev: 0, bytes }.encode())?;
        Ok(req)
    }

    /// Waits for the Grant of `req` (answering Reclaims meanwhile, if so
    /// set); None if the broker closed the connection.
    pub fn wait_grant(&mut self, req: u32) -> io::Result<Option<u64>> {
        loop {
            match self.next_msg()? {
                None => return Ok(None),
                Some(Msg::Grant { req: r, bytes }) => {
                    self.held += bytes;
                    if r == req {
                        return Ok(Some(bytes));
                    }
                }
                Some(Msg::Reclaim { .. }) if self.answer_reclaims => {
                    let all = self.held;
                    self.release(all)?;
                }
                Some(_) => {}
            }
        }
    }

    /// Reserve and wait.
    pub fn reserve(&mut self, bytes: u64) -> io::Result<Option<u64>> {
        let req = self.send_reserve(bytes)?;
        self.wait_grant(req)
    }

    pub fn release(&mut self, bytes: u64) -> io::Result<()> {
        self.held = self.held.saturating_sub(bytes);
        self.sock
            .write_all(&Msg::Release { dev: 0, bytes }.encode())
    }

    /// Whether the budget page can be made writable by reopening its
    /// descriptor through /proc (it must not).
    pub fn budget_writable(&self) -> bool {
        let Some(fd) = &self.budget else {
            return false;
        };
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        else {
            return false;
        };
        // SAFETY: maps the reopened descriptor (a failure is the answer);
        // unmapped at once.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            libc::munmap(p, 4096);
        }
        true
    }

    /// Truncates the process page to nothing: Ok if it could.
    pub fn truncate_page(&self) -> io::Result<()> {
        let fd = self.page.as_ref().ok_or(io::ErrorKind::NotFound)?;
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

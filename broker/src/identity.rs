//! Who a connecting process is, from the kernel: `SO_PEERCRED` (pid, uid,
//! gid, taken by the kernel at `connect`), a pidfd (so a reused pid can
//! never be confused with the process: the broker watches the pidfd for the
//! process's exit), and the cgroup v2 path in `/proc/PID/cgroup`. Nothing
//! the client says decides its identity.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A connected process as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The cgroup v2 path ("/" when the process is in the root).
    pub cgroup: String,
}

/// The cgroup v2 path of a `/proc/PID/cgroup` text: its `0::` line. On a
/// cgroup v1 only host, the `name=systemd` hierarchy, else the first line's
/// path (v1 has no single tree).
pub fn parse_cgroup(text: &str) -> Option<String> {
    let mut v1_systemd = None;
    let mut first = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            return Some(path.to_string());
        }
        if ctrls == "name=systemd" {
            v1_systemd = Some(path.to_string());
        }
        first.get_or_insert_with(|| path.to_string());
    }
    v1_systemd.or(first)
}

/// The cgroup of a live process.
pub fn cgroup_of(pid: u32) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    parse_cgroup(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no cgroup line"))
}

/// A pidfd for the process at the other end of `sock`: the kernel's own
/// (`SO_PEERPIDFD`, Linux 6.5+) when it offers one, else `pidfd_open(pid)`
/// checked against pid reuse. `SO_PEERCRED`'s pid is the connecting
/// process's; it may have exited since (handing its socket to a child) and
/// its pid gone to an unrelated process. So the process the fallback's
/// pidfd names must itself hold the other end of this connection (found
/// with `sock_diag`, as `ss -xp` does): then it is either the process that
/// connected or one it gave the socket to, and nobody can be mistaken for
/// a process that never had the connection. Where that cannot be checked
/// (no `unix_diag` in the kernel, or a broker that may not read other
/// users' descriptors) the fallback is taken unchecked, and the broker
/// says so once.
pub fn peer_pidfd(sock: RawFd, pid: u32) -> io::Result<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with a valid socket, an int out-value and its length.
    let rc = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 && fd >= 0 {
        // SAFETY: the kernel returned a new descriptor that we now own.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pidfd = pidfd_open(pid)?;
    match holds_peer(sock, pid) {
        Ok(true) => {}
        Ok(false) => {
            let why = format!("process {pid} does not hold the connection it made");
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{why} (its pid was reused); refused"),
            ));
        }
        Err(e) => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                tracing::warn!(
                    "this kernel has no SO_PEERPIDFD and the connecting process cannot be checked ({e}): a reused pid cannot be told from the process that connected"
                )
            });
        }
    }
    // The descriptors were read while `pidfd` pinned the process: if it had
    // exited meanwhile they might be another's.
    if pidfd_exited(&pidfd) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "exited"));
    }
    Ok(pidfd)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: the pidfd_open system call with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether process `pid` has a descriptor of the other end of `sock`.
pub fn holds_peer(sock: RawFd, pid: u32) -> io::Result<bool> {
    let peer = peer_inode(sock)?;
    let want = format!("socket:[{peer}]");
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if std::fs::read_link(e?.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The inode of the other end of a connected Unix socket, from the
/// kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `UDIAG_SHOW_PEER`).
fn peer_inode(sock: RawFd) -> io::Result<u32> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    let own = nix::sys::stat::fstat(sock).map_err(io::Error::from)?.st_ino as u32;
    // nlmsghdr (16 bytes), then unix_diag_req (24 bytes).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&own.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let nl = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if nl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created, owned from here on.
    let nl = unsafe { OwnedFd::from_raw_fd(nl) };
    // SAFETY: send(2) of a buffer we own, with its length.
    if unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: recv(2) into a buffer we own, with its length.
    let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_peer(&buf[..n as usize], UNIX_DIAG_PEER)
}

/// The peer inode in a `sock_diag` answer (pure: table-tested).
fn parse_peer(msg: &[u8], peer_attr: u16) -> io::Result<u32> {
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    let len = u32_at(msg, 0).ok_or_else(|| bad("short answer"))? as usize;
    let ty = u16_at(msg, 4).ok_or_else(|| bad("short answer"))?;
    if ty == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, 16).map_or(0, |e| -(e as i32));
        return Err(io::Error::from_raw_os_error(errno));
    }
    let msg = msg.get(..len).ok_or_else(|| bad("truncated answer"))?;
    // nlmsghdr (16), unix_diag_msg (16), then attributes.
    let mut i = 32;
    while let (Some(alen), Some(aty)) = (u16_at(msg, i), u16_at(msg, i + 2)) {
        let alen = alen as usize;
        if alen < 4 {
            break;
        }
        if aty == peer_attr {
            return u32_at(msg, i + 4).ok_or_else(|| bad("short peer attribute"));
        }
        i += alen.div_ceil(4) * 4;
    }
    Err(bad("no peer (the socket is not connected)"))
}

/// Whether the other end of a connected socket has closed (or shut down
/// its writing side).
pub fn hung_up(sock: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: sock,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Whether the process of a pidfd has exited (its pidfd is readable).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines_of_every_kind() {
        assert_eq!(
            parse_cgroup("0::/kubepods.slice/pod1/cri-containerd-abc.scope\n").as_deref(),
            Some("/kubepods.slice/pod1/cri-containerd-abc.scope")
        );
        let hybrid = "9:name=systemd:/user.slice\n4:memory:/x\n0::/team-a/job\n";
        assert_eq!(parse_cgroup(hybrid).as_deref(), Some("/team-a/job"));
        let v1 = "4:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        assert_eq!(parse_cgroup(v1).as_deref(), Some("/docker/abc"));
        assert_eq!(parse_cgroup("3:cpu,cpuacct:/a\n").as_deref(), Some("/a"));
        assert_eq!(parse_cgroup("garbage"), None);
        assert_eq!(parse_cgroup(""), None);
    }

    #[test]
    fn own_cgroup_and_pidfd() {
        let me = std::process::id();
        assert!(cgroup_of(me).unwrap().starts_with('/'));
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = peer_pidfd(a.as_raw_fd(), me).unwrap();
        assert!(!pidfd_exited(&fd), "this process is alive");
        assert!(!hung_up(a.as_raw_fd()));
        drop(b);
        assert!(hung_up(a.as_raw_fd()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let cfd = pidfd_open(child.id()).unwrap();
        child.wait().unwrap();
        assert!(pidfd_exited(&cfd));
    }

    #[test]
    fn the_holder_of_a_connection_is_found_and_no_one_else() {
        let me = std::process::id();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(
            holds_peer(a.as_raw_fd(), me).unwrap(),
            "this process holds b"
        );
        // A process that never had the connection (the descriptors are
        // close-on-exec) does not hold it.
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        assert!(!holds_peer(a.as_raw_fd(), child.id()).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        drop(b);
        assert!(
            holds_peer(a.as_raw_fd(), me).is_err() || !holds_peer(a.as_raw_fd(), me).unwrap(),
            "a closed peer is held by nobody"
        );
    }

    #[test]
    fn sock_diag_answers_are_parsed() {
        let mut m = vec![0u8; 32];
        m[4..6].copy_from_slice(&20u16.to_ne_bytes());
        // An attribute of another kind, then the peer.
        m.extend_from_slice(&6u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&[b'x', b'y', 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_peer(&m, 2).unwrap(), 1234);
        assert!(parse_peer(&m[..36], 2).is_err(), "truncated");
        let mut short = m.clone();
        short[0..4].copy_from_slice(&36u32.to_ne_bytes());
        assert!(parse_peer(&short, 2).is_err(), "no peer attribute");
        let mut err = vec![0u8; 20];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            parse_peer(&err, 2).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert!(parse_peer(&[], 2).is_err());
    }
}

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
/// (`SO_PEERPIDFD`, Linux 6.5+) when it offers one, else `pidfd_open(pid)`.
/// The fallback can race with the peer's exit and the reuse of its pid:
/// the caller checks afterwards that the peer has not hung up ([`hung_up`]),
/// so the pidfd was opened while the peer (which keeps its end open while
/// it lives) still had that pid.
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
    // SAFETY: the pidfd_open system call with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
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
        let cfd = peer_pidfd(-1, child.id()).unwrap();
        child.wait().unwrap();
        assert!(pidfd_exited(&cfd));
    }
}

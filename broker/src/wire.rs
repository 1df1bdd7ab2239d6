//! Frames with file descriptors on a tokio Unix stream (`SCM_RIGHTS`), and
//! plain frames on its halves.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tslice_proto::{FrameBuf, Msg};

/// Sends one message with a descriptor attached to its first byte.
pub async fn send_with_fd(stream: &UnixStream, msg: &Msg, fd: RawFd) -> io::Result<()> {
    let frame = msg.encode();
    let mut sent = 0;
    while sent < frame.len() {
        stream.writable().await?;
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let res = stream.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(&frame[sent..])];
            let c: &[ControlMessage] = if sent == 0 { &cmsg } else { &[] };
            sendmsg::<()>(stream.as_raw_fd(), &iov, c, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(io::Error::from)
        });
        match res {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until one whole frame is buffered in `fb`, keeping the first
/// descriptor that arrives (any others are closed at once). Returns false at
/// the end of the stream.
pub async fn recv_with_fds(
    stream: &UnixStream,
    fb: &mut FrameBuf,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        stream.readable().await?;
        let res = stream.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; 4]);
            let m = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut got = Vec::new();
            for c in m.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(list) = c {
                    // SAFETY: descriptors the kernel just installed for us.
                    got.extend(
                        list.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            Ok((m.bytes, got))
        });
        match res {
            Ok((0, _)) => return Ok(false),
            Ok((n, got)) => {
                fb.push(&buf[..n]);
                for fd in got {
                    if fds.is_empty() {
                        fds.push(fd);
                    }
                }
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads the next message from a plain reader, buffering in `fb`. None at
/// the end of the stream; an error for a malformed frame.
pub async fn read_msg<R: AsyncReadExt + Unpin>(
    r: &mut R,
    fb: &mut FrameBuf,
) -> io::Result<Option<Msg>> {
    let mut buf = [0u8; 4096];
    loop {
        match fb.next_msg() {
            Ok(Some(m)) => return Ok(Some(m)),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        fb.push(&buf[..n]);
    }
}

pub async fn write_msg<W: AsyncWriteExt + Unpin>(w: &mut W, m: &Msg) -> io::Result<()> {
    w.write_all(&m.encode()).await
}

//! A minimal broker client for the tests: connects to the socket given as
//! the first argument, says Hello with a process page (as the shim does, but
//! without CUDA, so it can run as any user), and prints the tenant the
//! broker put it in (`tenant=<name>`), or `refused=<reason>`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use tslice_proto::{FrameBuf, Hello, HelloDevice, Msg};

fn main() {
    let path = std::env::args().nth(1).expect("usage: broker_hello SOCKET");
    let mut s = UnixStream::connect(&path).expect("connect to the broker");
    // The process page: a memfd of the agreed size and layout.
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"hello".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    let len = tslice_proto::page::PROCESS_LEN;
    // SAFETY: sizes and maps the memfd we own; writes its header words.
    unsafe {
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let words = p as *mut u32;
        *words.add(1) = tslice_proto::page::PAGE_VERSION;
        *words = tslice_proto::page::PROCESS_MAGIC;
    }
    let hello = Msg::Hello(Hello {
        pid: std::process::id(),
        flags: 0,
        devices: vec![HelloDevice {
            uuid: [9; 16],
            total: 1 << 30,
            granted: 0,
            used: 0,
        }],
    })
    .encode();
    let mut iov = libc::iovec {
        iov_base: hello.as_ptr() as *mut libc::c_void,
        iov_len: hello.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: a msghdr pointing at live buffers, with one SCM_RIGHTS header.
    unsafe {
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
        assert_eq!(libc::sendmsg(s.as_raw_fd(), &m, 0), hello.len() as isize);
    }
    let mut fb = FrameBuf::new();
    let mut buf = [0u8; 4096];
    loop {
        match fb.next_msg().expect("a valid frame") {
            Some(Msg::Welcome { tenant, .. }) => {
                println!("tenant={tenant}");
                break;
            }
            Some(Msg::Refused { reason }) => {
                println!("refused={reason}");
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "the broker closed the connection");
                fb.push(&buf[..n]);
            }
        }
    }
    let _ = s.flush();
}

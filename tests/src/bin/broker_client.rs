//! A scripted broker client for the tests (see `tslice_tests::raw`): the
//! socket is the first argument; commands come one per line on stdin and
//! each answers one line on stdout.
//!
//! ```text
//! hello total=BYTES [reconnect=BYTES] [uuid=32HEX] [page=sealed|unsealed|none]
//!                         -> tenant=NAME | refused=REASON
//! reserve BYTES           -> grant=BYTES | closed   (Reclaims answered meanwhile)
//! send-reserve BYTES      -> req=N                  (no wait)
//! wait N                  -> grant=BYTES | closed
//! release BYTES           -> ok
//! held                    -> held=BYTES
//! handoff                 -> handed pid=PID  (the connecting process forks
//!                            and exits; its child goes on with the socket)
//! exit
//! ```

use std::io::BufRead;
use tslice_tests::raw::{HelloSpec, RawClient};

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: broker_client SOCKET");
    let mut c = RawClient::connect(path.as_ref()).expect("connect to the broker");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let mut w = line.split_whitespace();
        let answer = match (w.next().unwrap_or(""), w.next()) {
            ("hello", _) => {
                let mut spec = HelloSpec::default();
                for kv in line.split_whitespace().skip(1) {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    match k {
                        "total" => spec.total = num(v),
                        "reconnect" => spec.reconnect = Some(num(v)),
                        "uuid" => {
                            for (i, b) in spec.uuid.iter_mut().enumerate() {
                                *b = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).expect("hex");
                            }
                        }
                        "page" => {
                            spec.page = match v {
                                "sealed" => Some(true),
                                "unsealed" => Some(false),
                                _ => None,
                            }
                        }
                        _ => panic!("unknown {k}"),
                    }
                }
                match c.hello(&spec) {
                    Ok(t) => format!("tenant={t}"),
                    Err(e) => format!("refused={e}"),
                }
            }
            ("reserve", Some(b)) => match c.reserve(num(b)) {
                Ok(Some(g)) => format!("grant={g}"),
                _ => "closed".into(),
            },
            ("send-reserve", Some(b)) => format!("req={}", c.send_reserve(num(b)).expect("send")),
            ("wait", Some(r)) => match c.wait_grant(num(r) as u32) {
                Ok(Some(g)) => format!("grant={g}"),
                _ => "closed".into(),
            },
            ("release", Some(b)) => {
                c.release(num(b)).expect("send");
                "ok".into()
            }
            ("held", _) => format!("held={}", c.held),
            ("handoff", _) => {
                // SAFETY: getpid and fork in a single-threaded program; the
                // parent only exits, the child goes on as before.
                let (me, child) = unsafe { (libc::getpid(), libc::fork()) };
                match child {
                    0 => {
                        // Until the parent is gone (reparented).
                        // SAFETY: getppid has no preconditions.
                        while unsafe { libc::getppid() } == me {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        format!("handed pid={me}")
                    }
                    // SAFETY: leaves at once, without running destructors.
                    c if c > 0 => unsafe { libc::_exit(0) },
                    _ => panic!("fork: {}", std::io::Error::last_os_error()),
                }
            }
            ("exit", _) => break,
            _ => panic!("unknown command {line:?}"),
        };
        println!("{answer}");
    }
}

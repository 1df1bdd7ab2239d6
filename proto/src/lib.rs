//! # tslice-proto
//!
//! What the node broker and the shims in tenant processes say to each other
//! over the broker's Unix socket, and the layout of the memory pages they
//! share. Pure code without dependencies or `unsafe`: the shim links it, the
//! broker and the `tslice` CLI link it, and the decoder is fuzzed on its
//! own. `include/tslice_broker.h` describes the same for C.
//!
//! ## Frames
//! Every message is one frame: a little-endian `u32` length of the body,
//! then the body: `u16` protocol version ([`VERSION`]), `u16` kind, then the
//! kind's fields, little-endian, in the order the [`Msg`] variant lists them
//! (strings: `u16` length and UTF-8 bytes; lists: `u16` count then items).
//! A body is at most [`MAX_FRAME`] bytes. A frame that is too long, of
//! another version, of an unknown kind, short or with bytes left over is an
//! error ([`DecodeError`]); the broker closes that one connection.
//!
//! File descriptors travel beside frames as `SCM_RIGHTS`: the shim's process
//! page with [`Msg::Hello`], the broker's budget page with [`Msg::Welcome`].
#![forbid(unsafe_code)]

pub mod page;

use std::fmt;

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Largest frame body.
pub const MAX_FRAME: usize = 64 * 1024;
/// Devices a process can report (CUDA ordinals 0..MAX_DEVICES).
pub const MAX_DEVICES: usize = 64;

/// One device as a process sees it, in [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloDevice {
    /// The GPU's UUID (what identifies the physical device across processes
    /// whatever `CUDA_VISIBLE_DEVICES` says).
    pub uuid: [u8; 16],
    /// Its memory.
    pub total: u64,
    /// What this process holds already: granted by a broker before (a
    /// reconnect after the broker restarted) and used of it.
    pub granted: u64,
    pub used: u64,
}

/// The first message of a shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Informational: the broker identifies the process from the kernel.
    pub pid: u32,
    /// [`HELLO_RECONNECT`].
    pub flags: u32,
    /// The process's devices, by CUDA ordinal.
    pub devices: Vec<HelloDevice>,
}

/// `Hello::flags`: this process was connected to a broker before.
pub const HELLO_RECONNECT: u32 = 1;

/// A tenant's view of one device ([`Msg::View`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The tenant's name (at most 4 KiB travel).
    pub tenant: String,
    /// Its limit on the device (`u64::MAX`: none).
    pub limit: u64,
    /// What its processes have reserved there.
    pub reserved: u64,
    /// The host pids of its processes on the device (at most
    /// [`MAX_VIEW_PIDS`] travel).
    pub pids: Vec<u32>,
}

/// Every message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Shim → broker, first: who I am (a process page travels with it).
    Hello(Hello),
    /// Shim → broker: reserve `bytes` more on device `dev` (an ordinal of
    /// the Hello); answered by [`Msg::Grant`] with the same `req`.
    Reserve { req: u32, dev: u32, bytes: u64 },
    /// Shim → broker: return `bytes` of unused reservation on `dev`.
    Release { dev: u32, bytes: u64 },
    /// Client → broker: the node's status as JSON (root or the broker's
    /// own user only), answered by [`Msg::Status`].
    StatusRequest,
    /// Client → broker, alone on its connection: the asking process's
    /// tenant's view of the device with this UUID (what NVML shows a
    /// process that has not initialised CUDA, e.g. `nvidia-smi` in a
    /// tenant's container), answered by [`Msg::View`]. `total` and
    /// `ordinal` are the device's memory and CUDA ordinal as the client sees
    /// them (`u32::MAX`: unknown); a tenant with no process on the device
    /// has its limit resolved against them.
    ViewRequest {
        uuid: [u8; 16],
        total: u64,
        ordinal: u32,
    },
    /// Broker → shim, first: the process's tenant (a budget page travels
    /// with it).
    Welcome { tenant: String, flags: u32 },
    /// Broker → shim: the answer to `Reserve` `req`: `bytes` granted (at
    /// least what was asked) or 0 (refused: the tenant's limit).
    Grant { req: u32, bytes: u64 },
    /// Broker → shim: return what you hold unused on `dev` (another process
    /// of your tenant needs it).
    Reclaim { dev: u32 },
    /// Broker → client: the status.
    Status { json: String },
    /// Broker → client: the answer to [`Msg::ViewRequest`].
    View(View),
    /// Broker → client: the request was refused, and why (then it closes).
    Refused { reason: String },
}

const K_HELLO: u16 = 1;
const K_RESERVE: u16 = 2;
const K_RELEASE: u16 = 3;
const K_STATUS_REQUEST: u16 = 4;
const K_VIEW_REQUEST: u16 = 5;
const K_WELCOME: u16 = 101;
const K_GRANT: u16 = 102;
const K_RECLAIM: u16 = 103;
const K_STATUS: u16 = 104;
const K_REFUSED: u16 = 105;
const K_VIEW: u16 = 106;

/// Most pids a [`Msg::View`] carries (the rest are left out).
pub const MAX_VIEW_PIDS: usize = 4096;

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix exceeds [`MAX_FRAME`].
    TooLong(usize),
    /// The body ended before a field did.
    Short { kind: u16 },
    /// Bytes were left after the last field.
    Trailing { kind: u16, extra: usize },
    /// Another protocol version.
    Version(u16),
    /// A kind this version does not know.
    Kind(u16),
    /// A field has a value it cannot have.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong(n) => write!(
                f,
                "frame of {n} bytes is longer than the {MAX_FRAME} allowed"
            ),
            DecodeError::Short { kind } => write!(f, "message of kind {kind} is truncated"),
            DecodeError::Trailing { kind, extra } => {
                write!(f, "message of kind {kind} has {extra} bytes too many")
            }
            DecodeError::Version(v) => {
                write!(f, "protocol version {v}, but this side speaks {VERSION}")
            }
            DecodeError::Kind(k) => write!(f, "unknown message kind {k}"),
            DecodeError::Invalid(what) => write!(f, "invalid message: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, x: u16) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// Strings are cut to what a frame can carry (at a character boundary).
    fn str(&mut self, s: &str) {
        self.str_upto(s, MAX_FRAME - 64);
    }
    /// A string cut to at most `max` bytes (at a character boundary).
    fn str_upto(&mut self, s: &str, max: usize) {
        let mut n = s.len().min(max);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.u16(n.min(u16::MAX as usize) as u16);
        self.bytes(&s.as_bytes()[..n.min(u16::MAX as usize)]);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    kind: u16,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Short { kind: self.kind });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("a string is not UTF-8"))
    }
    fn uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }
    /// A count (u16) and that many items, refused past `max` (`too_many`
    /// says so).
    fn list<T>(
        &mut self,
        max: usize,
        too_many: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::Invalid(too_many));
        }
        (0..n).map(|_| item(self)).collect()
    }
    fn dev(&mut self) -> Result<u32, DecodeError> {
        let d = self.u32()?;
        if d as usize >= MAX_DEVICES {
            return Err(DecodeError::Invalid("device ordinal beyond 64"));
        }
        Ok(d)
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                kind: self.kind,
                extra: self.b.len(),
            })
        }
    }
}

impl Msg {
    /// The whole frame: length prefix and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(0); // length, patched below
        w.u16(VERSION);
        match self {
            Msg::Hello(h) => {
                w.u16(K_HELLO);
                w.u32(h.pid);
                w.u32(h.flags);
                let n = h.devices.len().min(MAX_DEVICES);
                w.u16(n as u16);
                for d in &h.devices[..n] {
                    w.bytes(&d.uuid);
                    w.u64(d.total);
                    w.u64(d.granted);
                    w.u64(d.used);
                }
            }
            Msg::Reserve { req, dev, bytes } => {
                w.u16(K_RESERVE);
                w.u32(*req);
                w.u32(*dev);
                w.u64(*bytes);
            }
            Msg::Release { dev, bytes } => {
                w.u16(K_RELEASE);
                w.u32(*dev);
                w.u64(*bytes);
            }
            Msg::StatusRequest => w.u16(K_STATUS_REQUEST),
            Msg::ViewRequest {
                uuid,
                total,
                ordinal,
            } => {
                w.u16(K_VIEW_REQUEST);
                w.bytes(uuid);
                w.u64(*total);
                w.u32(*ordinal);
            }
            Msg::Welcome { tenant, flags } => {
                w.u16(K_WELCOME);
                w.str(tenant);
                w.u32(*flags);
            }
            Msg::Grant { req, bytes } => {
                w.u16(K_GRANT);
                w.u32(*req);
                w.u64(*bytes);
            }
            Msg::Reclaim { dev } => {
                w.u16(K_RECLAIM);
                w.u32(*dev);
            }
            Msg::Status { json } => {
                w.u16(K_STATUS);
                // Large statuses are split by the broker; one frame carries a part.
                w.str(json);
            }
            Msg::Refused { reason } => {
                w.u16(K_REFUSED);
                w.str(reason);
            }
            Msg::View(v) => {
                w.u16(K_VIEW);
                // Room for every pid: the name is cut to 4 KiB.
                w.str_upto(&v.tenant, 4096);
                w.u64(v.limit);
                w.u64(v.reserved);
                let n = v.pids.len().min(MAX_VIEW_PIDS);
                w.u16(n as u16);
                for p in &v.pids[..n] {
                    w.u32(*p);
                }
            }
        }
        let len = (w.0.len() - 4) as u32;
        w.0[..4].copy_from_slice(&len.to_le_bytes());
        w.0
    }

    /// Decodes one frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Msg, DecodeError> {
        if body.len() > MAX_FRAME {
            return Err(DecodeError::TooLong(body.len()));
        }
        let mut r = Reader { b: body, kind: 0 };
        let v = r.u16()?;
        if v != VERSION {
            return Err(DecodeError::Version(v));
        }
        let kind = r.u16()?;
        r.kind = kind;
        let m = match kind {
            K_HELLO => Msg::Hello(Hello {
                pid: r.u32()?,
                flags: r.u32()?,
                devices: r.list(MAX_DEVICES, "more than 64 devices", |r| {
                    Ok(HelloDevice {
                        uuid: r.uuid()?,
                        total: r.u64()?,
                        granted: r.u64()?,
                        used: r.u64()?,
                    })
                })?,
            }),
            K_RESERVE => Msg::Reserve {
                req: r.u32()?,
                dev: r.dev()?,
                bytes: r.u64()?,
            },
            K_RELEASE => Msg::Release {
                dev: r.dev()?,
                bytes: r.u64()?,
            },
            K_STATUS_REQUEST => Msg::StatusRequest,
            K_VIEW_REQUEST => Msg::ViewRequest {
                uuid: r.uuid()?,
                total: r.u64()?,
                ordinal: r.u32()?,
            },
            K_WELCOME => Msg::Welcome {
                tenant: r.str()?,
                flags: r.u32()?,
            },
            K_GRANT => Msg::Grant {
                req: r.u32()?,
                bytes: r.u64()?,
            },
            K_RECLAIM => Msg::Reclaim { dev: r.dev()? },
            K_STATUS => Msg::Status { json: r.str()? },
            K_REFUSED => Msg::Refused { reason: r.str()? },
            K_VIEW => Msg::View(View {
                tenant: r.str()?,
                limit: r.u64()?,
                reserved: r.u64()?,
                pids: r.list(MAX_VIEW_PIDS, "more than 4096 pids", |r| r.u32())?,
            }),
            k => return Err(DecodeError::Kind(k)),
        };
        r.end()?;
        Ok(m)
    }
}

/// Splits a byte stream into frame bodies.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn new() -> FrameBuf {
        FrameBuf::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's body, None if more bytes are needed, or an
    /// error for a length beyond [`MAX_FRAME`] (the stream is then unusable).
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(DecodeError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// The next complete message (see [`FrameBuf::next_body`]).
    pub fn next_msg(&mut self) -> Result<Option<Msg>, DecodeError> {
        match self.next_body()? {
            Some(b) => Msg::decode(&b).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::Hello(Hello {
                pid: 42,
                flags: HELLO_RECONNECT,
                devices: vec![
                    HelloDevice {
                        uuid: [7; 16],
                        total: 80 << 30,
                        granted: 64 << 20,
                        used: 2 << 20,
                    },
                    HelloDevice {
                        uuid: [9; 16],
                        total: 1,
                        granted: 0,
                        used: 0,
                    },
                ],
            }),
            Msg::Reserve {
                req: 3,
                dev: 1,
                bytes: 1 << 30,
            },
            Msg::Release { dev: 63, bytes: 5 },
            Msg::StatusRequest,
            Msg::Welcome {
                tenant: "team-a".into(),
                flags: 0,
            },
            Msg::Grant { req: 3, bytes: 0 },
            Msg::Reclaim { dev: 0 },
            Msg::Status {
                json: "{\"tenants\": []}".into(),
            },
            Msg::Refused {
                reason: "ünïcode".into(),
            },
            Msg::ViewRequest {
                uuid: [3; 16],
                total: 80 << 30,
                ordinal: 2,
            },
            Msg::View(View {
                tenant: "pod/ns/x".into(),
                limit: u64::MAX,
                reserved: 1 << 30,
                pids: vec![1, 4_000_000, 77],
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_through_frames() {
        let mut fb = FrameBuf::new();
        let msgs = all();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode()).collect();
        // Fed one byte at a time: frames come out whole, in order.
        let mut got = Vec::new();
        for b in stream {
            fb.push(&[b]);
            while let Some(m) = fb.next_msg().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn malformed_frames_are_named() {
        let ok = Msg::Reserve {
            req: 1,
            dev: 2,
            bytes: 3,
        }
        .encode();
        let body = &ok[4..];
        assert_eq!(
            Msg::decode(&body[..body.len() - 1]),
            Err(DecodeError::Short { kind: K_RESERVE })
        );
        let mut long = body.to_vec();
        long.push(0);
        assert_eq!(
            Msg::decode(&long),
            Err(DecodeError::Trailing {
                kind: K_RESERVE,
                extra: 1
            })
        );
        let mut v2 = body.to_vec();
        v2[0] = 2;
        assert_eq!(Msg::decode(&v2), Err(DecodeError::Version(2)));
        let mut k = body.to_vec();
        k[2] = 99;
        assert_eq!(Msg::decode(&k), Err(DecodeError::Kind(99)));
        assert_eq!(Msg::decode(&[]), Err(DecodeError::Short { kind: 0 }));
        let mut dev = body.to_vec();
        dev[8] = 64;
        assert!(matches!(Msg::decode(&dev), Err(DecodeError::Invalid(_))));
        let mut fb = FrameBuf::new();
        fb.push(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert_eq!(fb.next_body(), Err(DecodeError::TooLong(MAX_FRAME + 1)));
        for e in [
            DecodeError::TooLong(1 << 20),
            DecodeError::Kind(7),
            DecodeError::Invalid("x"),
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: every prefix and every
        // single-byte corruption of every message decodes or errs.
        for m in all() {
            let f = m.encode();
            let body = &f[4..];
            for n in 0..body.len() {
                let _ = Msg::decode(&body[..n]);
            }
            for i in 0..body.len() {
                for x in [0u8, 1, 0x7f, 0xff] {
                    let mut b = body.to_vec();
                    b[i] = x;
                    let _ = Msg::decode(&b);
                }
            }
        }
    }

    #[test]
    fn a_view_with_a_long_name_and_every_pid_fits_a_frame() {
        let m = Msg::View(View {
            tenant: "x".repeat(MAX_FRAME),
            limit: 1,
            reserved: 2,
            pids: (0..MAX_VIEW_PIDS as u32 + 10).collect(),
        });
        let f = m.encode();
        assert!(f.len() - 4 <= MAX_FRAME);
        match Msg::decode(&f[4..]) {
            Ok(Msg::View(v)) => {
                assert_eq!((v.tenant.len(), v.pids.len()), (4096, MAX_VIEW_PIDS));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_strings_are_cut_to_fit_a_frame() {
        let m = Msg::Status {
            json: "é".repeat(MAX_FRAME),
        };
        let f = m.encode();
        assert!(f.len() - 4 <= MAX_FRAME);
        assert!(matches!(Msg::decode(&f[4..]), Ok(Msg::Status { .. })));
    }
}

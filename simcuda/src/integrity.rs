//! The runtime's integrity check (private export table `d4082055-...`,
//! slot 1): the runtime calls it with three versions and compares the
//! 128-bit answers with its own computation.
//!
//! The algorithm (an MD2-like keyed digest over the driver version, the
//! caller's version, pid, thread, three table addresses, a timestamp and
//! each device's UUID and PCI location) follows what the ZLUDA project
//! (Apache-2.0 / MIT) documents in its `dark_api` code; see NOTICE.

/// The substitution table of the digest.
const MIX: [u8; 256] = [
    0x29, 0x2E, 0x43, 0xC9, 0xA2, 0xD8, 0x7C, 0x01, 0x3D, 0x36, 0x54, 0xA1, 0xEC, 0xF0, 0x06, 0x13,
    0x62, 0xA7, 0x05, 0xF3, 0xC0, 0xC7, 0x73, 0x8C, 0x98, 0x93, 0x2B, 0xD9, 0xBC, 0x4C, 0x82, 0xCA,
    0x1E, 0x9B, 0x57, 0x3C, 0xFD, 0xD4, 0xE0, 0x16, 0x67, 0x42, 0x6F, 0x18, 0x8A, 0x17, 0xE5, 0x12,
    0xBE, 0x4E, 0xC4, 0xD6, 0xDA, 0x9E, 0xDE, 0x49, 0xA0, 0xFB, 0xF5, 0x8E, 0xBB, 0x2F, 0xEE, 0x7A,
    0xA9, 0x68, 0x79, 0x91, 0x15, 0xB2, 0x07, 0x3F, 0x94, 0xC2, 0x10, 0x89, 0x0B, 0x22, 0x5F, 0x21,
    0x80, 0x7F, 0x5D, 0x9A, 0x5A, 0x90, 0x32, 0x27, 0x35, 0x3E, 0xCC, 0xE7, 0xBF, 0xF7, 0x97, 0x03,
    0xFF, 0x19, 0x30, 0xB3, 0x48, 0xA5, 0xB5, 0xD1, 0xD7, 0x5E, 0x92, 0x2A, 0xAC, 0x56, 0xAA, 0xC6,
    0x4F, 0xB8, 0x38, 0xD2, 0x96, 0xA4, 0x7D, 0xB6, 0x76, 0xFC, 0x6B, 0xE2, 0x9C, 0x74, 0x04, 0xF1,
    0x45, 0x9D, 0x70, 0x59, 0x64, 0x71, 0x87, 0x20, 0x86, 0x5B, 0xCF, 0x65, 0xE6, 0x2D, 0xA8, 0x02,
    0x1B, 0x60, 0x25, 0xAD, 0xAE, 0xB0, 0xB9, 0xF6, 0x1C, 0x46, 0x61, 0x69, 0x34, 0x40, 0x7E, 0x0F,
    0x55, 0x47, 0xA3, 0x23, 0xDD, 0x51, 0xAF, 0x3A, 0xC3, 0x5C, 0xF9, 0xCE, 0xBA, 0xC5, 0xEA, 0x26,
    0x2C, 0x53, 0x0D, 0x6E, 0x85, 0x28, 0x84, 0x09, 0xD3, 0xDF, 0xCD, 0xF4, 0x41, 0x81, 0x4D, 0x52,
    0x6A, 0xDC, 0x37, 0xC8, 0x6C, 0xC1, 0xAB, 0xFA, 0x24, 0xE1, 0x7B, 0x08, 0x0C, 0xBD, 0xB1, 0x4A,
    0x78, 0x88, 0x95, 0x8B, 0xE3, 0x63, 0xE8, 0x6D, 0xE9, 0xCB, 0xD5, 0xFE, 0x3B, 0x00, 0x1D, 0x39,
    0xF2, 0xEF, 0xB7, 0x0E, 0x66, 0x58, 0xD0, 0xE4, 0xA6, 0x77, 0x72, 0xF8, 0xEB, 0x75, 0x4B, 0x0A,
    0x31, 0x44, 0x50, 0xB4, 0x8F, 0xED, 0x1F, 0x1A, 0xDB, 0x99, 0x8D, 0x33, 0x9F, 0x11, 0x83, 0x14,
];

/// The key the digest is keyed with (inner pad 0x36, outer pad 0x5c).
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// Digest state: 16 bytes of digest, the current block, block xor digest,
/// a running checksum, the fill of the current block and the last checksum byte.
struct Digest {
    state: [u8; 48],
    checksum: [u8; 16],
    fill: usize,
    last: u8,
}

impl Digest {
    fn new() -> Digest {
        Digest {
            state: [0; 48],
            checksum: [0; 16],
            fill: 0,
            last: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        let i = self.fill;
        self.state[16 + i] = b;
        self.state[32 + i] = self.state[i] ^ b;
        let m = MIX[usize::from(b ^ self.last)] ^ self.checksum[i];
        self.checksum[i] = m;
        self.last = m;
        self.fill = (i + 1) & 15;
        if self.fill != 0 {
            return;
        }
        let mut x: u8 = 0x29;
        for r in 0..18u8 {
            for k in 0..48 {
                self.state[k] ^= if k == 0 { x } else { MIX[usize::from(x)] };
                x = self.state[k];
            }
            x = x.wrapping_add(r);
            if r != 17 {
                x = MIX[usize::from(x)];
            }
        }
    }

    fn bytes(&mut self, data: &[u8], mask: u8) {
        for b in data {
            self.byte(b ^ mask);
        }
    }

    fn finish(mut self) -> [u8; 16] {
        let pad = (16 - self.fill) as u8;
        for _ in 0..pad {
            self.byte(pad);
        }
        for i in 0..16 {
            let c = self.checksum[i];
            self.byte(c);
        }
        let mut out = [0; 16];
        out.copy_from_slice(&self.state[..16]);
        out
    }
}

/// What the digest covers besides the devices.
pub struct Input {
    pub driver_version: u32,
    pub version: u32,
    pub pid: u32,
    pub thread: u32,
    pub cudart_table: u64,
    pub integrity_table: u64,
    pub integrity_fn: u64,
    pub seconds: u64,
}

/// One device's identity as the digest sees it.
pub struct DeviceId {
    pub uuid: [u8; 16],
    pub pci_domain: i32,
    pub pci_bus: i32,
    pub pci_device: i32,
}

/// The 128-bit answer for `input` on `devices`.
pub fn answer(input: &Input, devices: &[DeviceId]) -> [u64; 2] {
    match input.version % 10 {
        0 => return [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        1 => return [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        _ => {}
    }
    let mut d = Digest::new();
    d.bytes(&KEY, 0x36);
    let mut packed = Vec::with_capacity(48);
    for v in [input.driver_version, input.version, input.pid, input.thread] {
        packed.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        input.cudart_table,
        input.integrity_table,
        input.integrity_fn,
        input.seconds,
    ] {
        packed.extend_from_slice(&v.to_le_bytes());
    }
    d.bytes(&packed, 0);
    for dev in devices {
        let mut b = dev.uuid.to_vec();
        for v in [dev.pci_domain, dev.pci_bus, dev.pci_device] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        d.bytes(&b, 0);
    }
    let inner = d.finish();
    let mut d = Digest::new();
    d.bytes(&KEY, 0x5c);
    d.bytes(&inner, 0);
    let out = d.finish();
    [
        u64::from_le_bytes(out[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(out[8..].try_into().expect("8 bytes")),
    ]
}

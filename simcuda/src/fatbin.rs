//! Reading the images the runtime loads: the fatbin wrapper, the fatbin
//! container and the ELF cubins inside it, for kernel names and the sizes of
//! `__device__` variables. Compressed entries (what `nvcc -compress-mode`
//! makes, and what cuBLAS and PyTorch ship: zstd, or LZ4 blocks) are
//! decompressed first; PTX is not read.

use std::collections::{HashMap, HashSet};

const WRAPPER_MAGIC: u32 = 0x466243b1;
const FATBIN_MAGIC: u32 = 0xBA55ED50;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Header flags of a compressed entry.
const LZ4: u64 = 0x2000;
const ZSTD: u64 = 0x8000;
/// Upper bound on what this reader copies out of an image (sanity).
const MAX_IMAGE: u64 = 1 << 30;

/// What an image defines, as far as it could be read.
#[derive(Default, Debug)]
pub struct Symbols {
    /// Function names, when at least one ELF cubin was readable.
    pub functions: Option<HashSet<String>>,
    /// Sizes of global variables.
    pub globals: HashMap<String, u64>,
}

/// Copies `len` bytes at `addr`.
///
/// # Safety
/// `[addr, addr+len)` is readable.
unsafe fn bytes(addr: usize, len: u64) -> Vec<u8> {
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec()
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Reads the symbols of an image handed to `cuModuleLoadData` or
/// `cuLibraryLoadData`: a fatbin wrapper, a fatbin, or an ELF cubin.
///
/// # Safety
/// `image` points to a valid image of one of those kinds (the API contract).
pub unsafe fn read_image(image: *const u8) -> Symbols {
    let mut out = Symbols::default();
    if image.is_null() {
        return out;
    }
    // SAFETY: every image kind starts with at least 16 readable header bytes.
    let head = unsafe { bytes(image as usize, 16) };
    let magic = u32_at(&head, 0).unwrap_or(0);
    let fatbin = if magic == WRAPPER_MAGIC {
        // struct { int magic; int version; const unsigned long long *data; void *filename_or_fatbins; }
        u64_at(&head, 8).unwrap_or(0) as usize
    } else if magic == FATBIN_MAGIC {
        image as usize
    } else if head.starts_with(ELF_MAGIC) {
        // SAFETY: an ELF header is 64 bytes.
        let eh = unsafe { bytes(image as usize, 64) };
        let end = u64_at(&eh, 0x28).unwrap_or(0)
            + u64::from(u16_at(&eh, 0x3c).unwrap_or(0)) * u64::from(u16_at(&eh, 0x3a).unwrap_or(0));
        if end > 0 && end < MAX_IMAGE {
            // SAFETY: an ELF image extends at least to the end of its section header table.
            let elf = unsafe { bytes(image as usize, end) };
            read_elf(&elf, &mut out);
        }
        return out;
    } else {
        return out;
    };
    if fatbin == 0 {
        return out;
    }
    // SAFETY: the fatbin header is 16 bytes: magic, version, header size, body size.
    let fh = unsafe { bytes(fatbin, 16) };
    if u32_at(&fh, 0) != Some(FATBIN_MAGIC) {
        return out;
    }
    let hsize = u64::from(u16_at(&fh, 6).unwrap_or(16));
    let body = u64_at(&fh, 8).unwrap_or(0);
    if body == 0 || body > MAX_IMAGE {
        return out;
    }
    // SAFETY: the fatbin holds hsize + body bytes, per its header.
    let fb = unsafe { bytes(fatbin, hsize + body) };
    let mut off = hsize as usize;
    while off + 16 <= fb.len() {
        let (Some(kind), Some(eh), Some(psz)) =
            (u16_at(&fb, off), u32_at(&fb, off + 4), u64_at(&fb, off + 8))
        else {
            break;
        };
        let flags = u64_at(&fb, off + 40).unwrap_or(0);
        let start = off + eh as usize;
        let end = start.saturating_add(psz as usize);
        if eh == 0 || end > fb.len() {
            break;
        }
        if kind == 2 {
            // The uncompressed size follows the flags in a 64-byte header.
            let full = if eh >= 64 {
                u64_at(&fb, off + 56).unwrap_or(0)
            } else {
                0
            };
            // A compressed payload's own length (the entry is padded).
            let packed = match u32_at(&fb, off + 16) {
                Some(n) if n > 0 && start + (n as usize) <= end => start + n as usize,
                _ => end,
            };
            let raw = if flags & (LZ4 | ZSTD) != 0 {
                &fb[start..packed]
            } else {
                &fb[start..end]
            };
            if let Some(elf) = payload(raw, flags, full) {
                if elf.starts_with(ELF_MAGIC) {
                    read_elf(&elf, &mut out);
                }
            }
        }
        off = end;
    }
    out
}

/// An entry's payload, decompressed if it is (None: it cannot be).
fn payload(raw: &[u8], flags: u64, full: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::io::Read;
    if flags & ZSTD != 0 {
        let mut d = ruzstd::decoding::StreamingDecoder::new(raw).ok()?;
        let mut out = Vec::with_capacity(full.min(MAX_IMAGE) as usize);
        // One frame; the payload may be padded after it.
        d.by_ref().take(MAX_IMAGE).read_to_end(&mut out).ok()?;
        Some(out.into())
    } else if flags & LZ4 != 0 {
        if full == 0 || full > MAX_IMAGE {
            return None;
        }
        let out = lz4_flex::block::decompress(raw, full as usize).ok()?;
        Some(out.into())
    } else {
        Some(raw.into())
    }
}

/// Collects function and object symbols from an ELF64 cubin.
fn read_elf(elf: &[u8], out: &mut Symbols) -> Option<()> {
    if !elf.starts_with(ELF_MAGIC) || elf.get(4) != Some(&2) {
        return None;
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let sec = |i: usize| -> Option<(u32, usize, usize, u32, usize)> {
        let o = shoff + i * shentsize;
        Some((
            u32_at(elf, o + 4)?,
            u64_at(elf, o + 0x18)? as usize,
            u64_at(elf, o + 0x20)? as usize,
            u32_at(elf, o + 0x28)?,
            u64_at(elf, o + 0x38)? as usize,
        ))
    };
    let functions = out.functions.get_or_insert_with(HashSet::new);
    for i in 0..shnum {
        let (ty, off, size, link, entsize) = sec(i)?;
        if ty != 2 || entsize < 24 {
            continue; // SHT_SYMTAB only
        }
        let (_, stroff, strsize, _, _) = sec(link as usize)?;
        let strtab = elf.get(stroff..stroff + strsize)?;
        for k in 0..size / entsize {
            let s = off + k * entsize;
            let name_off = u32_at(elf, s)? as usize;
            let info = *elf.get(s + 4)?;
            let shndx = u16_at(elf, s + 6)?;
            let st_size = u64_at(elf, s + 16)?;
            let name_bytes = strtab.get(name_off..)?;
            let name_len = name_bytes.iter().position(|b| *b == 0)?;
            let Ok(name) = std::str::from_utf8(&name_bytes[..name_len]) else {
                continue;
            };
            if name.is_empty() || shndx == 0 {
                continue;
            }
            match info & 0xf {
                2 => {
                    functions.insert(name.to_string());
                }
                1 => {
                    out.globals.insert(name.to_string(), st_size);
                }
                _ => {}
            }
        }
    }
    Some(())
}

//! Tensor maps (`cuTensorMapEncode*`): the descriptors Hopper's tensor
//! memory accelerator reads, which cuBLASLt and FlashAttention-style kernels
//! build on the host before a launch. Arguments are validated with the
//! driver's documented rules; the 128-byte descriptor is opaque to programs,
//! so it records the address and the shape it was built from.

use crate::entry::{slice, Res, INVALID_VALUE};
use crate::process;
use std::ffi::c_void;

/// `CUtensorMap`: 128 bytes, 64-byte aligned.
const MAP_BYTES: usize = 128;
/// CU_TENSOR_MAP_DATA_TYPE_* (UINT8 .. 16U6_ALIGN16B in CUDA 13).
const MAX_DATA_TYPE: u32 = 15;

/// Bytes per element of a data type (packed sub-byte types count as 1).
fn elem_bytes(dt: u32) -> Res<u64> {
    Ok(match dt {
        0 => 1,                   // UINT8
        1 | 6 | 9 => 2,           // UINT16, FLOAT16, BFLOAT16
        2 | 3 | 7 | 10..=12 => 4, // UINT32, INT32, FLOAT32, FLOAT32_FTZ, TFLOAT32(_FTZ)
        4 | 5 | 8 => 8,           // UINT64, INT64, FLOAT64
        13..=MAX_DATA_TYPE => 1,  // packed 4- and 6-bit types
        _ => return Err(INVALID_VALUE),
    })
}

struct Shape<'a> {
    rank: u32,
    address: u64,
    dims: &'a [u64],
    strides: &'a [u64],
    element_strides: &'a [u32],
    interleave: u32,
    swizzle: u32,
    l2: u32,
    oob: u32,
}

fn check(dt: u32, s: &Shape) -> Res {
    process::initialized()?;
    elem_bytes(dt)?;
    let min_rank = if s.interleave != 0 { 3 } else { 1 };
    let align = if s.interleave == 2 { 32 } else { 16 };
    if !(min_rank..=5).contains(&s.rank) || s.address == 0 || !s.address.is_multiple_of(align) {
        return Err(INVALID_VALUE);
    }
    if s.dims.iter().any(|d| *d == 0 || *d > 1 << 32) {
        return Err(INVALID_VALUE);
    }
    if s.strides.iter().any(|st| st % align != 0 || *st >= 1 << 40) {
        return Err(INVALID_VALUE);
    }
    if s.element_strides.iter().any(|e| *e == 0 || *e > 8) {
        return Err(INVALID_VALUE);
    }
    // interleave NONE/16B/32B, swizzle NONE..128B_ATOM_64B, L2 NONE..256B, OOB NONE/NAN.
    if s.interleave > 2 || s.swizzle > 6 || s.l2 > 3 || s.oob > 1 {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// Writes the descriptor: address, then a digest of everything else.
fn encode(map: *mut c_void, dt: u32, s: &Shape, extra: &[u64]) -> Res {
    if map.is_null() {
        return Err(INVALID_VALUE);
    }
    let mut words = [0u64; MAP_BYTES / 8];
    words[0] = s.address;
    words[1] = u64::from(dt)
        | u64::from(s.rank) << 8
        | u64::from(s.interleave) << 16
        | u64::from(s.swizzle) << 24
        | u64::from(s.l2) << 32
        | u64::from(s.oob) << 40;
    for (i, d) in s.dims.iter().enumerate() {
        words[2 + i] = *d;
    }
    for (i, st) in s.strides.iter().enumerate() {
        words[7 + i] = *st;
    }
    let tail = s
        .element_strides
        .iter()
        .map(|e| u64::from(*e))
        .chain(extra.iter().copied());
    for (i, e) in tail.enumerate().take(MAP_BYTES / 8 - 11) {
        words[11 + i] = e;
    }
    // SAFETY: the caller's CUtensorMap, 128 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(words.as_ptr().cast::<u8>(), map.cast::<u8>(), MAP_BYTES)
    };
    Ok(())
}

export! {
    #[allow(clippy::too_many_arguments)]
    fn cuTensorMapEncodeTiled(map: *mut c_void, dt: u32, rank: u32, address: *mut c_void, dims: *const u64, strides: *const u64, box_dim: *const u32, element_strides: *const u32, interleave: u32, swizzle: u32, l2: u32, oob: u32) {
        let r = rank.min(5) as usize;
        // SAFETY: the caller's arrays: rank dimensions, rank-1 strides, rank box sizes and element strides.
        let (dims, strides, boxes, es) = unsafe {
            (slice(dims, r)?, slice(strides, r.saturating_sub(1))?, slice(box_dim, r)?, slice(element_strides, r)?)
        };
        let s = Shape { rank, address: address as u64, dims, strides, element_strides: es, interleave, swizzle, l2, oob };
        check(dt, &s)?;
        if boxes.iter().any(|b| *b == 0 || *b > 256) {
            return Err(INVALID_VALUE);
        }
        // Without interleave the inner box row must be a multiple of 16 bytes.
        if interleave == 0 && (u64::from(boxes[0]) * elem_bytes(dt)?) % 16 != 0 {
            return Err(INVALID_VALUE);
        }
        let extra: Vec<u64> = boxes.iter().map(|b| u64::from(*b)).collect();
        encode(map, dt, &s, &extra)
    }
}

export! {
    #[allow(clippy::too_many_arguments)]
    fn cuTensorMapEncodeIm2col(map: *mut c_void, dt: u32, rank: u32, address: *mut c_void, dims: *const u64, strides: *const u64, lower: *const i32, upper: *const i32, channels: u32, pixels: u32, element_strides: *const u32, interleave: u32, swizzle: u32, l2: u32, oob: u32) {
        let r = rank.min(5) as usize;
        // SAFETY: the caller's arrays: rank dimensions, rank-1 strides, rank-2 corners, rank element strides.
        let (dims, strides, lo, hi, es) = unsafe {
            (slice(dims, r)?, slice(strides, r.saturating_sub(1))?, slice(lower, r.saturating_sub(2))?, slice(upper, r.saturating_sub(2))?, slice(element_strides, r)?)
        };
        if rank < 3 || channels == 0 || channels > 256 || pixels == 0 || pixels > 1024 {
            return Err(INVALID_VALUE);
        }
        let s = Shape { rank, address: address as u64, dims, strides, element_strides: es, interleave, swizzle, l2, oob };
        check(dt, &s)?;
        let extra: Vec<u64> = lo.iter().chain(hi).map(|c| *c as u64).collect();
        encode(map, dt, &s, &extra)
    }
}

export! {
    fn cuTensorMapReplaceAddress(map: *mut c_void, address: *mut c_void) {
        process::initialized()?;
        let a = address as u64;
        if map.is_null() || a == 0 || !a.is_multiple_of(16) {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the caller's CUtensorMap; its first word is the address (see `encode`).
        unsafe { map.cast::<u64>().write_unaligned(a) };
        Ok(())
    }
}

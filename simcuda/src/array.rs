//! CUDA arrays and mipmapped arrays: opaque device allocations, charged to
//! the ledger as width x max(h,1) x max(d,1) x channels x element size
//! (mipmapped: the sum of the levels, each dimension halved, at least 1).

use crate::context::{self, Ctx};
use crate::entry::{out, read, Res, INVALID_VALUE};
use crate::memory;
use crate::process::{self, handle_of, Handle, Magic};
use cuda_abi::{
    array_format_bytes, CUarray, CUmipmappedArray, CUDA_ARRAY3D_DESCRIPTOR, CUDA_ARRAY_DESCRIPTOR,
};
use std::sync::Arc;

pub struct Array {
    magic: Magic,
    pub desc: CUDA_ARRAY3D_DESCRIPTOR,
    pub mipmapped: bool,
    charged: u64,
    device: i32,
    /// The context that owns it (its destroy frees it).
    ctx_id: u64,
    pub(crate) bases: Vec<(u64, usize)>,
}

impl Handle for Array {
    const MAGIC: u32 = 0xA44A_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

fn level_bytes(d: &CUDA_ARRAY3D_DESCRIPTOR, level: u32) -> u64 {
    let dim = |x: usize| ((x as u64) >> level).max(1);
    let h = if d.Height == 0 { 1 } else { dim(d.Height) };
    let z = if d.Depth == 0 { 1 } else { dim(d.Depth) };
    dim(d.Width)
        .saturating_mul(h)
        .saturating_mul(z)
        .saturating_mul(u64::from(d.NumChannels))
        .saturating_mul(array_format_bytes(d.Format))
}

/// `CUDA_ARRAY3D_LAYERED`.
const LAYERED: u32 = 0x01;

/// Whether the extent fits the device's limits for this kind of array (an
/// H100's texture limits, as `cuDeviceGetAttribute` reports them); a real
/// driver rejects anything larger with `CUDA_ERROR_INVALID_VALUE`, before it
/// thinks about memory.
fn extent_ok(d: &CUDA_ARRAY3D_DESCRIPTOR, levels: u32, mipmapped: bool) -> bool {
    let (w, h, z) = (d.Width, d.Height, d.Depth);
    let fits = if d.Flags & LAYERED != 0 {
        w <= 32768 && h <= 32768 && (1..=2048).contains(&z)
    } else if z > 0 {
        h > 0
            && ((w <= 16384 && h <= 16384 && z <= 16384) || (w <= 8192 && h <= 8192 && z <= 32768))
    } else if mipmapped {
        w <= 32768 && h <= 32768
    } else if h > 0 {
        w <= 131072 && h <= 65536
    } else {
        w <= 131072
    };
    // A mipmapped array has at most one level per halving of its largest
    // dimension, down to 1.
    let largest = w
        .max(h)
        .max(if d.Flags & LAYERED != 0 { 0 } else { z })
        .max(1);
    let max_levels = usize::BITS - largest.leading_zeros();
    fits && (!mipmapped || levels <= max_levels)
}

fn create(
    ctx: &Arc<Ctx>,
    d: CUDA_ARRAY3D_DESCRIPTOR,
    levels: u32,
    mipmapped: bool,
) -> Res<Arc<Array>> {
    if d.Width == 0
        || !matches!(d.NumChannels, 1 | 2 | 4)
        || levels == 0
        || !extent_ok(&d, levels, mipmapped)
    {
        return Err(INVALID_VALUE);
    }
    let p = process::get();
    let gone = ctx.memory_gone.read().unwrap_or_else(|e| e.into_inner());
    if *gone {
        return Err(cuda_abi::CUresult::ERROR_INVALID_CONTEXT);
    }
    let dev = p.device(ctx.device)?;
    let sizes: Vec<u64> = (0..levels).map(|l| level_bytes(&d, l)).collect();
    let total = sizes.iter().fold(0u64, |a, s| a.saturating_add(*s));
    let charged = memory::charge_for(total);
    dev.sim
        .mem_charge(charged)
        .map_err(|_| cuda_abi::CUresult::ERROR_OUT_OF_MEMORY)?;
    let mut bases = Vec::new();
    for s in &sizes {
        match memory::map_anon(*s as usize, false) {
            Ok(b) => bases.push((b as u64, *s as usize)),
            Err(e) => {
                for (b, l) in bases {
                    memory::unmap(b, l);
                }
                dev.sim.mem_uncharge(charged);
                return Err(e);
            }
        }
    }
    Ok(p.arrays.insert(Array {
        magic: Magic::new(Array::MAGIC),
        desc: d,
        mipmapped,
        charged,
        device: ctx.device,
        ctx_id: ctx.id,
        bases,
    }))
}

/// Frees the arrays of a context being destroyed.
pub fn free_context(p: &process::Process, c: &Ctx) {
    for a in p.arrays.all().into_iter().filter(|a| a.ctx_id == c.id) {
        if p.arrays.remove(handle_of(&a)).is_ok() {
            release(p, &a);
        }
    }
}

fn release(p: &process::Process, a: &Array) {
    for (b, l) in &a.bases {
        memory::unmap(*b, *l);
    }
    if let Ok(d) = p.device(a.device) {
        d.sim.mem_uncharge(a.charged);
    }
}

fn destroy(h: *mut std::ffi::c_void, mipmapped: bool) -> Res {
    let p = process::initialized()?;
    let a = p.arrays.get(h)?;
    if a.mipmapped != mipmapped {
        return Err(cuda_abi::CUresult::ERROR_INVALID_HANDLE);
    }
    p.arrays.remove(h)?;
    release(p, &a);
    Ok(())
}

export! {
    fn cuArrayCreate_v2(ph: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) {
        let ctx = context::current()?;
        // SAFETY: caller's descriptor.
        let d = unsafe { read(desc)? };
        if ph.is_null() {
            return Err(INVALID_VALUE);
        }
        let d3 = CUDA_ARRAY3D_DESCRIPTOR { Width: d.Width, Height: d.Height, Depth: 0, Format: d.Format, NumChannels: d.NumChannels, Flags: 0 };
        let a = create(&ctx, d3, 1, false)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(ph, handle_of(&a)) }
    }
}

export! {
    fn cuArray3DCreate_v2(ph: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) {
        let ctx = context::current()?;
        // SAFETY: caller's descriptor.
        let d = unsafe { read(desc)? };
        if ph.is_null() {
            return Err(INVALID_VALUE);
        }
        let a = create(&ctx, d, 1, false)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(ph, handle_of(&a)) }
    }
}

export! {
    fn cuMipmappedArrayCreate(ph: *mut CUmipmappedArray, desc: *const CUDA_ARRAY3D_DESCRIPTOR, levels: u32) {
        let ctx = context::current()?;
        // SAFETY: caller's descriptor.
        let d = unsafe { read(desc)? };
        if ph.is_null() {
            return Err(INVALID_VALUE);
        }
        let a = create(&ctx, d, levels, true)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(ph, handle_of(&a)) }
    }
}

export! {
    fn cuArrayDestroy(h: CUarray) { destroy(h, false) }
}

export! {
    fn cuMipmappedArrayDestroy(h: CUmipmappedArray) { destroy(h, true) }
}

export! {
    fn cuArrayGetDescriptor_v2(desc: *mut CUDA_ARRAY_DESCRIPTOR, h: CUarray) {
        let a = process::initialized()?.arrays.get(h)?;
        if a.desc.Depth != 0 {
            return Err(INVALID_VALUE);
        }
        let d = CUDA_ARRAY_DESCRIPTOR { Width: a.desc.Width, Height: a.desc.Height, Format: a.desc.Format, NumChannels: a.desc.NumChannels };
        // SAFETY: caller's output pointer.
        unsafe { out(desc, d) }
    }
}

export! {
    fn cuArray3DGetDescriptor_v2(desc: *mut CUDA_ARRAY3D_DESCRIPTOR, h: CUarray) {
        let a = process::initialized()?.arrays.get(h)?;
        // SAFETY: caller's output pointer.
        unsafe { out(desc, a.desc) }
    }
}

//! Copies and memsets. Data moves immediately (kernels are not executed, so
//! nothing else changes device memory); each operation is also submitted as
//! `Copy` work in stream order, and synchronous forms wait for it, i.e. for
//! everything the context submitted before them. Inside stream capture the
//! asynchronous forms become graph nodes instead.

use crate::entry::{read, Res, INVALID_VALUE};
use crate::memory;
use crate::process::{self, Process};
use crate::stream::{self, DefaultStream};
use cuda_abi::driver_types::{memorytype, CUDA_MEMCPY2D, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS};
use cuda_abi::{CUcontext, CUdeviceptr, CUresult, CUstream};
use std::ffi::c_void;

/// A data operation, as a copy or memset node also stores it.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Copy(CUDA_MEMCPY3D),
    Set(CUDA_MEMSET_NODE_PARAMS),
}

// SAFETY: the raw pointers inside are caller addresses that CUDA's contract
// keeps valid for the operation (or the graph node) that holds them.
unsafe impl Send for Op {}
// SAFETY: as above; the pointers are never dereferenced through a shared Op concurrently by this driver's own logic.
unsafe impl Sync for Op {}

/// A linear copy between two unified-address pointers.
pub fn linear(dst: u64, dst_type: u32, src: u64, src_type: u32, n: usize) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcXInBytes: 0,
        srcY: 0,
        srcZ: 0,
        srcLOD: 0,
        srcMemoryType: src_type,
        srcHost: src as *const c_void,
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        reserved0: std::ptr::null_mut(),
        srcPitch: n,
        srcHeight: 1,
        dstXInBytes: 0,
        dstY: 0,
        dstZ: 0,
        dstLOD: 0,
        dstMemoryType: dst_type,
        dstHost: dst as *mut c_void,
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        reserved1: std::ptr::null_mut(),
        dstPitch: n,
        dstHeight: 1,
        WidthInBytes: n,
        Height: 1,
        Depth: 1,
    }
}

pub fn from_2d(c: &CUDA_MEMCPY2D) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcXInBytes: c.srcXInBytes,
        srcY: c.srcY,
        srcZ: 0,
        srcLOD: 0,
        srcMemoryType: c.srcMemoryType,
        srcHost: c.srcHost,
        srcDevice: c.srcDevice,
        srcArray: c.srcArray,
        reserved0: std::ptr::null_mut(),
        srcPitch: c.srcPitch,
        srcHeight: c.Height,
        dstXInBytes: c.dstXInBytes,
        dstY: c.dstY,
        dstZ: 0,
        dstLOD: 0,
        dstMemoryType: c.dstMemoryType,
        dstHost: c.dstHost,
        dstDevice: c.dstDevice,
        dstArray: c.dstArray,
        reserved1: std::ptr::null_mut(),
        dstPitch: c.dstPitch,
        dstHeight: c.Height,
        WidthInBytes: c.WidthInBytes,
        Height: c.Height,
        Depth: 1,
    }
}

/// One side of a copy, resolved: base address, pitch, rows per slice, and
/// whether it must lie in device memory.
pub struct Side {
    base: u64,
    pitch: u64,
    rows: u64,
    device: bool,
}

/// One end of a copy as the descriptor states it.
struct End {
    ty: u32,
    host: u64,
    dev: u64,
    array: cuda_abi::CUarray,
    x: usize,
    y: usize,
    z: usize,
    pitch: usize,
    height: usize,
}

impl End {
    fn src(c: &CUDA_MEMCPY3D) -> End {
        End {
            ty: c.srcMemoryType,
            host: c.srcHost as u64,
            dev: c.srcDevice,
            array: c.srcArray,
            x: c.srcXInBytes,
            y: c.srcY,
            z: c.srcZ,
            pitch: c.srcPitch,
            height: c.srcHeight,
        }
    }
    fn dst(c: &CUDA_MEMCPY3D) -> End {
        End {
            ty: c.dstMemoryType,
            host: c.dstHost as u64,
            dev: c.dstDevice,
            array: c.dstArray,
            x: c.dstXInBytes,
            y: c.dstY,
            z: c.dstZ,
            pitch: c.dstPitch,
            height: c.dstHeight,
        }
    }
}

fn side(p: &Process, e: End, c: &CUDA_MEMCPY3D) -> Res<Side> {
    let End {
        ty,
        host,
        dev,
        array,
        x,
        y,
        z,
        pitch,
        height,
    } = e;
    let width = c.WidthInBytes as u64;
    if ty == memorytype::ARRAY {
        return array_side(p, array, x, y, z, c);
    }
    let pitch = if pitch == 0 && c.Height <= 1 && c.Depth <= 1 {
        width
    } else {
        pitch as u64
    };
    if pitch < width {
        return Err(INVALID_VALUE);
    }
    let rows = if height == 0 {
        c.Height as u64
    } else {
        height as u64
    };
    if c.Depth > 1 && rows < c.Height as u64 {
        return Err(INVALID_VALUE);
    }
    let (addr, device) = match ty {
        memorytype::HOST => (host, false),
        memorytype::DEVICE => (dev, true),
        memorytype::UNIFIED => (dev, p.mem.find(dev).is_some()),
        _ => return Err(INVALID_VALUE),
    };
    if addr == 0 {
        return Err(INVALID_VALUE);
    }
    let base = addr + x as u64 + y as u64 * pitch + z as u64 * pitch * rows;
    Ok(Side {
        base,
        pitch,
        rows,
        device,
    })
}

/// A CUDA array as one end of a copy: its first level, rows of its width
/// (in bytes) one after the other, slices of its height; the copy's region
/// must lie within it.
fn array_side(
    p: &Process,
    h: cuda_abi::CUarray,
    x: usize,
    y: usize,
    z: usize,
    c: &CUDA_MEMCPY3D,
) -> Res<Side> {
    let a = p.arrays.get(h.cast())?;
    let d = &a.desc;
    let row = d.Width as u64 * u64::from(d.NumChannels) * cuda_abi::array_format_bytes(d.Format);
    let rows = (d.Height as u64).max(1);
    let depth = (d.Depth as u64).max(1);
    let fits = |start: usize, len: usize, max: u64| {
        (start as u64)
            .checked_add(len as u64)
            .is_some_and(|end| end <= max)
    };
    if !fits(x, c.WidthInBytes, row)
        || !fits(y, c.Height.max(1), rows)
        || !fits(z, c.Depth.max(1), depth)
    {
        return Err(INVALID_VALUE);
    }
    let base = a.bases.first().ok_or(INVALID_VALUE)?.0;
    Ok(Side {
        base: base + x as u64 + y as u64 * row + z as u64 * row * rows,
        pitch: row,
        rows,
        // Not in the table of linear allocations: bounds checked here.
        device: false,
    })
}

fn check(p: &Process, s: &Side, c: &CUDA_MEMCPY3D) -> Res {
    if !s.device || c.WidthInBytes == 0 || c.Height == 0 || c.Depth == 0 {
        return Ok(());
    }
    let last = s.base + (c.Depth as u64 - 1) * s.pitch * s.rows + (c.Height as u64 - 1) * s.pitch;
    memory::check_device(p, s.base, last + c.WidthInBytes as u64 - s.base)
}

/// An operation validated against this process's memory, ready to run.
pub enum Prepared {
    Copy {
        src: Side,
        dst: Side,
        width: usize,
        height: u64,
        depth: u64,
    },
    Set {
        m: CUDA_MEMSET_NODE_PARAMS,
        es: u64,
        pitch: u64,
    },
    Nothing,
}

/// Validates `op`: what [`Prepared::run`] then does without checking again.
pub fn prepare(p: &Process, op: &Op) -> Res<Prepared> {
    match op {
        Op::Copy(c) => {
            let src = side(p, End::src(c), c)?;
            let dst = side(p, End::dst(c), c)?;
            check(p, &src, c)?;
            check(p, &dst, c)?;
            Ok(Prepared::Copy {
                src,
                dst,
                width: c.WidthInBytes,
                height: c.Height as u64,
                depth: c.Depth as u64,
            })
        }
        Op::Set(m) => {
            let es = m.elementSize as u64;
            if !matches!(es, 1 | 2 | 4) || m.dst % es != 0 {
                return Err(INVALID_VALUE);
            }
            let row = m.width as u64 * es;
            let pitch = if m.height <= 1 { row } else { m.pitch as u64 };
            if pitch < row {
                return Err(INVALID_VALUE);
            }
            if m.width == 0 || m.height == 0 {
                return Ok(Prepared::Nothing);
            }
            memory::check_device(p, m.dst, (m.height as u64 - 1) * pitch + row)?;
            Ok(Prepared::Set { m: *m, es, pitch })
        }
    }
}

impl Prepared {
    /// Performs the data effect (validated by [`prepare`], with the memory
    /// still there: callers run it at once).
    pub fn run(&self) {
        match self {
            Prepared::Copy {
                src,
                dst,
                width,
                height,
                depth,
            } => {
                for z in 0..*depth {
                    for y in 0..*height {
                        let s = src.base + z * src.pitch * src.rows + y * src.pitch;
                        let d = dst.base + z * dst.pitch * dst.rows + y * dst.pitch;
                        // SAFETY: device ranges were validated against this driver's
                        // allocations; host ranges are the caller's, as CUDA requires.
                        unsafe { std::ptr::copy(s as *const u8, d as *mut u8, *width) };
                    }
                }
            }
            Prepared::Set { m, es, pitch } => {
                for y in 0..m.height as u64 {
                    let d = m.dst + y * pitch;
                    for i in 0..m.width as u64 {
                        let a = d + i * es;
                        // SAFETY: the range was validated against this driver's device allocations; `a` is element-aligned.
                        unsafe {
                            match es {
                                1 => *(a as *mut u8) = m.value as u8,
                                2 => *(a as *mut u16) = m.value as u16,
                                _ => *(a as *mut u32) = m.value,
                            }
                        }
                    }
                }
            }
            Prepared::Nothing => {}
        }
    }
}

/// Validates and performs an operation's data effect.
pub fn exec(p: &Process, op: &Op) -> Res {
    prepare(p, op)?.run();
    Ok(())
}

/// Runs `op` in stream order on `h` (synchronously if `sync`).
pub fn enqueue(h: CUstream, ds: DefaultStream, op: Op, sync: bool) -> Res {
    let p = process::initialized()?;
    let s = stream::resolve(h, ds)?;
    if s.capturing() {
        if sync {
            crate::capture::invalidate(&s);
            return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        return crate::capture::add_op(&s, op);
    }
    exec(p, &op)?;
    let seq = s.submit(simgpu::Work {
        kind: simgpu::WorkKind::Copy,
        duration_ns: 0,
        tag: 0,
    })?;
    if sync {
        s.ctx
            .sim()?
            .try_wait(seq)
            .map_err(crate::context::sim_err)?;
    }
    Ok(())
}

const H: u32 = memorytype::HOST;
const D: u32 = memorytype::DEVICE;
const U: u32 = memorytype::UNIFIED;

fn lin(dst: u64, dt: u32, src: u64, st: u32, n: usize) -> Op {
    Op::Copy(linear(dst, dt, src, st, n))
}

pub fn set(dst: u64, pitch: usize, value: u32, elem: u32, width: usize, height: usize) -> Op {
    Op::Set(CUDA_MEMSET_NODE_PARAMS {
        dst,
        pitch,
        value,
        elementSize: elem,
        width,
        height,
    })
}

const NULL: CUstream = std::ptr::null_mut();

export_pt! {
    fn cuMemcpy / cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, n: usize) |ds| { enqueue(NULL, ds, lin(dst, U, src, U, n), true) }
}
export_pt! {
    fn cuMemcpyAsync / cuMemcpyAsync_ptsz(dst: CUdeviceptr, src: CUdeviceptr, n: usize, h: CUstream) |ds| { enqueue(h, ds, lin(dst, U, src, U, n), false) }
}
export_pt! {
    fn cuMemcpyHtoD_v2 / cuMemcpyHtoD_v2_ptds(dst: CUdeviceptr, src: *const c_void, n: usize) |ds| { enqueue(NULL, ds, lin(dst, D, src as u64, H, n), true) }
}
export_pt! {
    fn cuMemcpyDtoH_v2 / cuMemcpyDtoH_v2_ptds(dst: *mut c_void, src: CUdeviceptr, n: usize) |ds| { enqueue(NULL, ds, lin(dst as u64, H, src, D, n), true) }
}
export_pt! {
    fn cuMemcpyDtoD_v2 / cuMemcpyDtoD_v2_ptds(dst: CUdeviceptr, src: CUdeviceptr, n: usize) |ds| { enqueue(NULL, ds, lin(dst, D, src, D, n), true) }
}
export_pt! {
    fn cuMemcpyHtoDAsync_v2 / cuMemcpyHtoDAsync_v2_ptsz(dst: CUdeviceptr, src: *const c_void, n: usize, h: CUstream) |ds| { enqueue(h, ds, lin(dst, D, src as u64, H, n), false) }
}
export_pt! {
    fn cuMemcpyDtoHAsync_v2 / cuMemcpyDtoHAsync_v2_ptsz(dst: *mut c_void, src: CUdeviceptr, n: usize, h: CUstream) |ds| { enqueue(h, ds, lin(dst as u64, H, src, D, n), false) }
}
export_pt! {
    fn cuMemcpyDtoDAsync_v2 / cuMemcpyDtoDAsync_v2_ptsz(dst: CUdeviceptr, src: CUdeviceptr, n: usize, h: CUstream) |ds| { enqueue(h, ds, lin(dst, D, src, D, n), false) }
}
export_pt! {
    fn cuMemcpyPeer / cuMemcpyPeer_ptds(dst: CUdeviceptr, dctx: CUcontext, src: CUdeviceptr, sctx: CUcontext, n: usize) |ds| {
        crate::context::resolve(dctx)?;
        crate::context::resolve(sctx)?;
        enqueue(NULL, ds, lin(dst, D, src, D, n), true)
    }
}
export_pt! {
    fn cuMemcpyPeerAsync / cuMemcpyPeerAsync_ptsz(dst: CUdeviceptr, dctx: CUcontext, src: CUdeviceptr, sctx: CUcontext, n: usize, h: CUstream) |ds| {
        crate::context::resolve(dctx)?;
        crate::context::resolve(sctx)?;
        enqueue(h, ds, lin(dst, D, src, D, n), false)
    }
}
export_pt! {
    fn cuMemcpy2D_v2 / cuMemcpy2D_v2_ptds(c: *const CUDA_MEMCPY2D) |ds| {
        // SAFETY: caller's copy descriptor.
        let c = unsafe { read(c)? };
        enqueue(NULL, ds, Op::Copy(from_2d(&c)), true)
    }
}
export_pt! {
    fn cuMemcpy2DUnaligned_v2 / cuMemcpy2DUnaligned_v2_ptds(c: *const CUDA_MEMCPY2D) |ds| {
        // SAFETY: caller's copy descriptor.
        let c = unsafe { read(c)? };
        enqueue(NULL, ds, Op::Copy(from_2d(&c)), true)
    }
}
export_pt! {
    fn cuMemcpy2DAsync_v2 / cuMemcpy2DAsync_v2_ptsz(c: *const CUDA_MEMCPY2D, h: CUstream) |ds| {
        // SAFETY: caller's copy descriptor.
        let c = unsafe { read(c)? };
        enqueue(h, ds, Op::Copy(from_2d(&c)), false)
    }
}
export_pt! {
    fn cuMemcpy3D_v2 / cuMemcpy3D_v2_ptds(c: *const CUDA_MEMCPY3D) |ds| {
        // SAFETY: caller's copy descriptor.
        let c = unsafe { read(c)? };
        enqueue(NULL, ds, Op::Copy(c), true)
    }
}
export_pt! {
    fn cuMemcpy3DAsync_v2 / cuMemcpy3DAsync_v2_ptsz(c: *const CUDA_MEMCPY3D, h: CUstream) |ds| {
        // SAFETY: caller's copy descriptor.
        let c = unsafe { read(c)? };
        enqueue(h, ds, Op::Copy(c), false)
    }
}

export_pt! {
    fn cuMemsetD8_v2 / cuMemsetD8_v2_ptds(dst: CUdeviceptr, v: u8, n: usize) |ds| { enqueue(NULL, ds, set(dst, 0, u32::from(v), 1, n, 1), true) }
}
export_pt! {
    fn cuMemsetD16_v2 / cuMemsetD16_v2_ptds(dst: CUdeviceptr, v: u16, n: usize) |ds| { enqueue(NULL, ds, set(dst, 0, u32::from(v), 2, n, 1), true) }
}
export_pt! {
    fn cuMemsetD32_v2 / cuMemsetD32_v2_ptds(dst: CUdeviceptr, v: u32, n: usize) |ds| { enqueue(NULL, ds, set(dst, 0, v, 4, n, 1), true) }
}
export_pt! {
    fn cuMemsetD8Async / cuMemsetD8Async_ptsz(dst: CUdeviceptr, v: u8, n: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, 0, u32::from(v), 1, n, 1), false) }
}
export_pt! {
    fn cuMemsetD16Async / cuMemsetD16Async_ptsz(dst: CUdeviceptr, v: u16, n: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, 0, u32::from(v), 2, n, 1), false) }
}
export_pt! {
    fn cuMemsetD32Async / cuMemsetD32Async_ptsz(dst: CUdeviceptr, v: u32, n: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, 0, v, 4, n, 1), false) }
}
export_pt! {
    fn cuMemsetD2D8_v2 / cuMemsetD2D8_v2_ptds(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, hgt: usize) |ds| { enqueue(NULL, ds, set(dst, pitch, u32::from(v), 1, w, hgt), true) }
}
export_pt! {
    fn cuMemsetD2D16_v2 / cuMemsetD2D16_v2_ptds(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, hgt: usize) |ds| { enqueue(NULL, ds, set(dst, pitch, u32::from(v), 2, w, hgt), true) }
}
export_pt! {
    fn cuMemsetD2D32_v2 / cuMemsetD2D32_v2_ptds(dst: CUdeviceptr, pitch: usize, v: u32, w: usize, hgt: usize) |ds| { enqueue(NULL, ds, set(dst, pitch, v, 4, w, hgt), true) }
}
export_pt! {
    fn cuMemsetD2D8Async / cuMemsetD2D8Async_ptsz(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, hgt: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, pitch, u32::from(v), 1, w, hgt), false) }
}
export_pt! {
    fn cuMemsetD2D16Async / cuMemsetD2D16Async_ptsz(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, hgt: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, pitch, u32::from(v), 2, w, hgt), false) }
}
export_pt! {
    fn cuMemsetD2D32Async / cuMemsetD2D32Async_ptsz(dst: CUdeviceptr, pitch: usize, v: u32, w: usize, hgt: usize, h: CUstream) |ds| { enqueue(h, ds, set(dst, pitch, v, 4, w, hgt), false) }
}

//! Stream memory operations (`cuStreamWriteValue*`, `cuStreamWaitValue*`,
//! `cuStreamBatchMemOp`), what NCCL, cuBLASLt and PyTorch's symmetric memory
//! use to signal between streams and processes; and the managed-memory
//! hints (`cuMemPrefetchAsync`, `cuMemAdvise`), which have nothing to move
//! on a simulated device and only validate.
//!
//! A write is a 4-byte memset in stream order (two for a 64-bit value), so
//! it is captured like one. A wait whose condition already holds costs
//! nothing; otherwise the context's host thread polls the word after the
//! stream's earlier work, and the stream's synchronization waits for it.
//! Work issued to the stream after an unsatisfied wait is not held back by
//! it: kernels go to the context's queue, and copies, memsets and writes
//! take effect when issued, as every data effect of this driver does (see
//! the crate docs). A program that signals with a write on one stream and
//! waits on another (the usual pattern) behaves as on a GPU.

use crate::copy::{self, set};
use crate::entry::{Res, INVALID_VALUE};
use crate::memory;
use crate::process;
use crate::stream::{self, DefaultStream};
use cuda_abi::{CUdeviceptr, CUresult, CUstream};
use std::ffi::c_void;

/// `CUstreamWaitValue_flags`.
const WAIT_GEQ: u32 = 0;
const WAIT_EQ: u32 = 1;
const WAIT_AND: u32 = 2;
const WAIT_NOR: u32 = 3;
const WAIT_FLUSH: u32 = 1 << 30;
/// `CUstreamBatchMemOpType`.
const OP_WAIT_32: u32 = 1;
const OP_WRITE_32: u32 = 2;
const OP_FLUSH_REMOTE: u32 = 3;
const OP_WAIT_64: u32 = 4;
const OP_WRITE_64: u32 = 5;
const OP_BARRIER: u32 = 6;

/// The 4- or 8-byte word at `addr`: aligned, in memory the device can use.
fn check_word(addr: CUdeviceptr, wide: bool) -> Res {
    let n = if wide { 8 } else { 4 };
    if !addr.is_multiple_of(n) {
        return Err(INVALID_VALUE);
    }
    memory::check_device(process::initialized()?, addr, n)
}

fn write(
    h: CUstream,
    ds: DefaultStream,
    addr: CUdeviceptr,
    value: u64,
    wide: bool,
    flags: u32,
) -> Res {
    // CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER (1) is the only flag.
    if flags > 1 {
        return Err(INVALID_VALUE);
    }
    check_word(addr, wide)?;
    copy::enqueue(h, ds, set(addr, 0, value as u32, 4, 1, 1), false)?;
    if wide {
        copy::enqueue(
            h,
            ds,
            set(addr + 4, 0, (value >> 32) as u32, 4, 1, 1),
            false,
        )?;
    }
    Ok(())
}

fn holds(cond: u32, have: u64, want: u64, wide: bool) -> bool {
    match cond {
        WAIT_GEQ if wide => have >= want,
        // 32-bit GEQ is a wrap-around comparison, as the driver's.
        WAIT_GEQ => (have as u32).wrapping_sub(want as u32) as i32 >= 0,
        WAIT_EQ => have == want,
        WAIT_AND => have & want != 0,
        _ if wide => !(have | want) != 0,
        _ => !((have | want) as u32) != 0,
    }
}

/// Reads the word at `addr` (device memory is host memory here).
fn load(addr: u64, wide: bool) -> u64 {
    // SAFETY: the range was checked to be inside a live allocation of this
    // process; the volatile read sees writes by other threads.
    unsafe {
        if wide {
            std::ptr::read_volatile(addr as *const u64)
        } else {
            u64::from(std::ptr::read_volatile(addr as *const u32))
        }
    }
}

fn wait(
    h: CUstream,
    ds: DefaultStream,
    addr: CUdeviceptr,
    value: u64,
    wide: bool,
    flags: u32,
) -> Res {
    let cond = flags & !WAIT_FLUSH;
    if cond > WAIT_NOR {
        return Err(INVALID_VALUE);
    }
    check_word(addr, wide)?;
    let s = stream::resolve(h, ds)?;
    if s.capturing() {
        crate::capture::invalidate(&s);
        return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    if holds(cond, load(addr, wide), value, wide) {
        return Ok(());
    }
    s.launch_host(Box::new(move || {
        // Until the word holds, or its memory is freed (device or mapped host).
        let n = if wide { 8 } else { 4 };
        while memory::check_device(process::get(), addr, n).is_ok()
            && !holds(cond, load(addr, wide), value, wide)
        {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }))
}

/// `CUstreamBatchMemOpParams` (a 48-byte union), as its wait/write members
/// lay it out: operation, address, value, flags, then the driver's alias.
#[repr(C)]
#[derive(Clone, Copy)]
struct BatchOp {
    operation: u32,
    _pad0: u32,
    address: u64,
    value: u64,
    flags: u32,
    _pad1: u32,
    _alias: u64,
    _pad2: u64,
}
const _: () = assert!(std::mem::size_of::<BatchOp>() == 48);
const _: () = assert!(std::mem::offset_of!(BatchOp, flags) == 24);

fn batch(h: CUstream, ds: DefaultStream, count: u32, ops: *mut c_void, flags: u32) -> Res {
    if flags != 0 || count > 256 {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller's array of `count` operations.
    let ops = unsafe { crate::entry::slice(ops.cast::<BatchOp>().cast_const(), count as usize)? };
    for o in ops {
        match o.operation {
            OP_WAIT_32 => wait(h, ds, o.address, o.value & 0xffff_ffff, false, o.flags)?,
            OP_WAIT_64 => wait(h, ds, o.address, o.value, true, o.flags)?,
            OP_WRITE_32 => write(h, ds, o.address, o.value & 0xffff_ffff, false, o.flags)?,
            OP_WRITE_64 => write(h, ds, o.address, o.value, true, o.flags)?,
            OP_FLUSH_REMOTE | OP_BARRIER => {}
            _ => return Err(INVALID_VALUE),
        }
    }
    Ok(())
}

// The v1 (CUDA 8) and v2 (CUDA 11.7) ABIs take the same arguments.
export_pt! { fn cuStreamWriteValue32 / cuStreamWriteValue32_ptsz(h: CUstream, addr: CUdeviceptr, v: u32, flags: u32) |ds| { write(h, ds, addr, u64::from(v), false, flags) } }
export_pt! { fn cuStreamWriteValue32_v2 / cuStreamWriteValue32_v2_ptsz(h: CUstream, addr: CUdeviceptr, v: u32, flags: u32) |ds| { write(h, ds, addr, u64::from(v), false, flags) } }
export_pt! { fn cuStreamWriteValue64 / cuStreamWriteValue64_ptsz(h: CUstream, addr: CUdeviceptr, v: u64, flags: u32) |ds| { write(h, ds, addr, v, true, flags) } }
export_pt! { fn cuStreamWriteValue64_v2 / cuStreamWriteValue64_v2_ptsz(h: CUstream, addr: CUdeviceptr, v: u64, flags: u32) |ds| { write(h, ds, addr, v, true, flags) } }
export_pt! { fn cuStreamWaitValue32 / cuStreamWaitValue32_ptsz(h: CUstream, addr: CUdeviceptr, v: u32, flags: u32) |ds| { wait(h, ds, addr, u64::from(v), false, flags) } }
export_pt! { fn cuStreamWaitValue32_v2 / cuStreamWaitValue32_v2_ptsz(h: CUstream, addr: CUdeviceptr, v: u32, flags: u32) |ds| { wait(h, ds, addr, u64::from(v), false, flags) } }
export_pt! { fn cuStreamWaitValue64 / cuStreamWaitValue64_ptsz(h: CUstream, addr: CUdeviceptr, v: u64, flags: u32) |ds| { wait(h, ds, addr, v, true, flags) } }
export_pt! { fn cuStreamWaitValue64_v2 / cuStreamWaitValue64_v2_ptsz(h: CUstream, addr: CUdeviceptr, v: u64, flags: u32) |ds| { wait(h, ds, addr, v, true, flags) } }
export_pt! { fn cuStreamBatchMemOp / cuStreamBatchMemOp_ptsz(h: CUstream, count: u32, ops: *mut c_void, flags: u32) |ds| { batch(h, ds, count, ops, flags) } }
export_pt! { fn cuStreamBatchMemOp_v2 / cuStreamBatchMemOp_v2_ptsz(h: CUstream, count: u32, ops: *mut c_void, flags: u32) |ds| { batch(h, ds, count, ops, flags) } }

/// A managed range for prefetch/advice: it must be memory of this process.
fn managed_range(ptr: CUdeviceptr, count: usize) -> Res {
    let p = process::initialized()?;
    if count == 0 {
        return Err(INVALID_VALUE);
    }
    memory::check_device(p, ptr, count as u64)
}

/// `CUmemLocation` (type, id).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Location {
    type_: u32,
    id: i32,
}

/// CU_DEVICE_CPU.
const DEVICE_CPU: i32 = -1;

fn location(device: i32) -> Res {
    if device == DEVICE_CPU {
        return Ok(());
    }
    process::initialized()?.device(device).map(|_| ())
}

export_pt! {
    fn cuMemPrefetchAsync / cuMemPrefetchAsync_ptsz(ptr: CUdeviceptr, count: usize, device: i32, h: CUstream) |ds| {
        managed_range(ptr, count)?;
        location(device)?;
        stream::resolve(h, ds)?;
        Ok(())
    }
}

export_pt! {
    fn cuMemPrefetchAsync_v2 / cuMemPrefetchAsync_v2_ptsz(ptr: CUdeviceptr, count: usize, loc: Location, flags: u32, h: CUstream) |ds| {
        managed_range(ptr, count)?;
        // DEVICE (1), HOST (2), HOST_NUMA (3), HOST_NUMA_CURRENT (4)
        match loc.type_ {
            1 => location(loc.id)?,
            2..=4 => {}
            _ => return Err(INVALID_VALUE),
        }
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        stream::resolve(h, ds)?;
        Ok(())
    }
}

/// CU_MEM_ADVISE_SET_READ_MOSTLY (1) .. UNSET_ACCESSED_BY (6).
fn advice(a: u32) -> Res {
    if (1..=6).contains(&a) {
        Ok(())
    } else {
        Err(INVALID_VALUE)
    }
}

export! {
    fn cuMemAdvise(ptr: CUdeviceptr, count: usize, advice_: u32, device: i32) {
        managed_range(ptr, count)?;
        advice(advice_)?;
        location(device)
    }
}

export! {
    fn cuMemAdvise_v2(ptr: CUdeviceptr, count: usize, advice_: u32, loc: Location) {
        managed_range(ptr, count)?;
        advice(advice_)?;
        match loc.type_ {
            1 => location(loc.id),
            2..=4 => Ok(()),
            _ => Err(INVALID_VALUE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_conditions_are_the_drivers() {
        assert!(holds(WAIT_GEQ, 5, 5, false));
        assert!(holds(WAIT_GEQ, 1, u64::from(u32::MAX), false)); // wrapped
        assert!(!holds(WAIT_GEQ, 4, 5, true));
        assert!(holds(WAIT_EQ, 7, 7, true));
        assert!(holds(WAIT_AND, 6, 2, false));
        assert!(!holds(WAIT_AND, 4, 2, false));
        assert!(holds(WAIT_NOR, 0, 0, false));
        assert!(!holds(WAIT_NOR, u64::from(u32::MAX), 0, false));
    }
}

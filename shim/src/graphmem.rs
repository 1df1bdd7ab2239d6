//! Graph memory: what CUDA graphs' memory-allocation nodes (explicit, or
//! `cuMemAllocAsync` captured into a graph) hold on the device.
//!
//! The rule: an executable graph's allocation nodes are charged, their sum
//! per device, from the moment the driver backs them physically (the
//! executable's upload or first launch) until it gives them back: a
//! `cuDeviceGraphMemTrim` after which the driver reports the device's graph
//! memory empty. Destroying the executable does not end the charge: CUDA
//! keeps its memory in the device's graph pool until a trim, and a later
//! executable on the device reuses that memory first (its charge moves to
//! the new executable; only the rest is taken). The charge is taken
//! before the driver is asked: over the cap, the launch or upload fails with
//! `CUDA_ERROR_OUT_OF_MEMORY` and nothing runs. A stream-ordered allocation
//! made while its stream is being captured is a node, not memory, and is
//! not charged when it is made (see `mem`). Nodes inside child graphs are
//! not counted.

use crate::hooks::real_fn;
use crate::log;
use crate::real;
use crate::state::{shim, Shim};
use cuda_abi::*;
use std::ffi::c_char;

/// Devices one executable's charges can name (more are not charged).
const DEVICES: usize = 4;

/// One executable graph's memory: its charge per device, and whether the
/// driver backs it now.
#[derive(Clone, Copy, Default)]
pub struct ExecMem {
    charges: [(u16, u64); DEVICES],
    n: u8,
    backed: bool,
    /// The executable is gone; its memory waits in the graph pool for a trim.
    destroyed: bool,
}

impl ExecMem {
    fn charges(&self) -> &[(u16, u64)] {
        &self.charges[..self.n as usize]
    }
}

/// What an executable made from `graph` will hold, on capped devices.
fn plan(s: &Shim, graph: CUgraph) -> Option<ExecMem> {
    let allocs = match real::graph_mem_allocs(graph) {
        Ok(a) => a,
        Err(e) => {
            log::warn!("graph memory of {graph:?} unknown ({e}); not charged");
            return None;
        }
    };
    let mut m = ExecMem::default();
    for (dev, bytes) in allocs {
        // Only capped devices are charged.
        if !matches!(s.mem_device(dev), Ok(Some(_))) {
            continue;
        }
        let dev = dev as u16;
        let bytes = tslice_policy::ledger::charge_for(bytes);
        match m.charges().iter().position(|(d, _)| *d == dev) {
            Some(i) => m.charges[i].1 += bytes,
            None if (m.n as usize) < DEVICES => {
                m.charges[m.n as usize] = (dev, bytes);
                m.n += 1;
            }
            None => log::warn!("graph {graph:?} allocates on more than {DEVICES} devices; device {dev} not charged"),
        }
    }
    (m.n > 0).then_some(m)
}

/// Records what an executable made from `graph` will hold (nothing yet).
fn instantiated(s: &Shim, exec: CUgraphExec, graph: CUgraph) {
    if let Some(m) = plan(s, graph) {
        s.graph_mem.insert(exec as u64, m);
    }
}

/// Takes up to `want` bytes on `dev` from destroyed executables' memory
/// still in the graph pool: the driver reuses it for a new executable, so
/// its charge moves rather than being taken twice. Returns what it took.
/// The caller holds the graph lock for writing.
fn reuse_residue(s: &Shim, dev: u16, want: u64) -> u64 {
    let mut took = 0;
    for (k, mut m) in s
        .graph_mem
        .take_where(|m| m.destroyed && m.backed && m.charges().iter().any(|(d, _)| *d == dev))
    {
        for c in m.charges[..m.n as usize]
            .iter_mut()
            .filter(|(d, _)| *d == dev)
        {
            let t = c.1.min(want - took);
            c.1 -= t;
            took += t;
        }
        if m.charges().iter().any(|(_, b)| *b > 0) {
            s.graph_mem.insert(k, m);
        }
        if took == want {
            break;
        }
    }
    took
}

/// Gives back to the pool's residue what `reuse_residue` took (a backing
/// that failed).
fn restore_residue(s: &Shim, dev: u16, bytes: u64) {
    if bytes > 0 {
        let mut m = ExecMem {
            backed: true,
            destroyed: true,
            ..ExecMem::default()
        };
        m.charges[0] = (dev, bytes);
        m.n = 1;
        s.graph_mem.insert(s.residue_key(), m);
    }
}

/// Charges `m` before the driver backs it (`call`); undone if the call
/// fails without backing it. Over the cap: `CUDA_ERROR_OUT_OF_MEMORY`,
/// nothing called. Memory destroyed executables left in the device's graph
/// pool is reused first (its charge moves to this executable).
fn charge_then(s: &Shim, m: &ExecMem, call: impl FnOnce() -> CUresult) -> CallResult {
    let mut taken: Vec<(u16, u64)> = Vec::new();
    let mut reused: Vec<(u16, u64)> = Vec::new();
    let undo = |taken: &[(u16, u64)], reused: &[(u16, u64)]| {
        for (dev, bytes) in taken {
            if let Some(d) = s.devices.get(*dev as usize) {
                s.release_mem(d, *bytes);
            }
        }
        for (dev, bytes) in reused {
            restore_residue(s, *dev, *bytes);
        }
    };
    for (dev, bytes) in m.charges() {
        let Some(d) = s.devices.get(*dev as usize) else {
            continue;
        };
        let r = reuse_residue(s, *dev, *bytes);
        reused.push((*dev, r));
        let bytes = &(*bytes - r);
        if *bytes == 0 {
            continue;
        }
        if let Err(st) = s.reserve_mem(d, *bytes) {
            log::info!(
                "graph launch: {bytes} bytes of graph memory refused: {} of the {} byte cap in use",
                st.used,
                st.limit
            );
            undo(&taken, &reused);
            return CallResult::Done(CUresult::ERROR_OUT_OF_MEMORY);
        }
        taken.push((*dev, *bytes));
    }
    // What the driver holds for graphs, to tell whether a failed call
    // backed the memory anyway.
    let before: Vec<Result<u64, CUresult>> = m
        .charges()
        .iter()
        .map(|(d, _)| real::graph_mem_reserved(CUdevice::from(*d)))
        .collect();
    let r = call();
    if !r.is_success() {
        let grew = m.charges().iter().zip(&before).any(|((d, _), b)| {
            matches!((b, real::graph_mem_reserved(CUdevice::from(*d))), (Ok(b), Ok(a)) if a > *b)
        });
        if grew {
            // The driver kept memory for the graph: the charge stays.
            return CallResult::KeptBacked(r);
        }
        undo(&taken, &reused);
    }
    CallResult::Done(r)
}

enum CallResult {
    Done(CUresult),
    /// The call failed, but the driver backed the memory: it is charged.
    KeptBacked(CUresult),
}

/// Backs an executable's memory (charged first) unless it is backed. The
/// caller holds the graph lock for writing.
fn backing(s: &Shim, exec: CUgraphExec, call: impl FnOnce() -> CUresult) -> CUresult {
    let Some(m) = s.graph_mem.get(exec as u64).filter(|m| !m.backed) else {
        return call();
    };
    match charge_then(s, &m, call) {
        CallResult::Done(r) if !r.is_success() => r,
        CallResult::Done(r) | CallResult::KeptBacked(r) => {
            s.graph_mem
                .insert(exec as u64, ExecMem { backed: true, ..m });
            r
        }
    }
}

fn give_back(s: &Shim, m: &ExecMem) {
    for (dev, bytes) in m.charges() {
        if let Some(d) = s.devices.get(*dev as usize) {
            s.release_mem(d, *bytes);
        }
    }
}

/// Runs a launch (or upload) of `exec` with its graph memory charged first.
/// Launches of executables already backed share the graph lock; the first
/// backing, trims and destructions take it alone, so a charge is never
/// taken twice nor lost to a concurrent trim.
pub fn launch(exec: CUgraphExec, call: impl FnOnce() -> CUresult) -> CUresult {
    let s = shim();
    if !s.mem_on() {
        return call();
    }
    let needs = |s: &Shim| s.graph_mem.get(exec as u64).is_some_and(|m| !m.backed);
    if s.graph_mem.get(exec as u64).is_none() {
        // No graph memory: nothing to order with.
        return call();
    }
    {
        let _shared = s.graph_lock.read().unwrap_or_else(|e| e.into_inner());
        if !needs(s) {
            return call();
        }
    }
    let _alone = s.graph_lock.write().unwrap_or_else(|e| e.into_inner());
    backing(s, exec, call)
}

fn instantiate_with(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    call: impl FnOnce() -> CUresult,
) -> CUresult {
    let r = call();
    let s = shim();
    if r.is_success() && s.mem_on() && !exec.is_null() {
        // SAFETY: written by the driver on success (checked non-null).
        instantiated(s, unsafe { *exec }, graph);
    }
    r
}

pub unsafe fn instantiate_with_flags(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    flags: u64,
) -> CUresult {
    let f = real_fn!(cuGraphInstantiateWithFlags);
    // SAFETY: the caller's arguments, passed on.
    instantiate_with(exec, graph, || unsafe { f(exec, graph, flags) })
}

pub unsafe fn instantiate_v1(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    err: *mut CUgraphNode,
    log: *mut c_char,
    len: usize,
) -> CUresult {
    let f = real_fn!(cuGraphInstantiate);
    // SAFETY: the caller's arguments, passed on.
    instantiate_with(exec, graph, || unsafe { f(exec, graph, err, log, len) })
}

pub unsafe fn instantiate_v2(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    err: *mut CUgraphNode,
    log: *mut c_char,
    len: usize,
) -> CUresult {
    let f = real_fn!(cuGraphInstantiate_v2);
    // SAFETY: the caller's arguments, passed on.
    instantiate_with(exec, graph, || unsafe { f(exec, graph, err, log, len) })
}

/// CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD: instantiation uploads (backs) at once.
const FLAG_UPLOAD: u64 = 2;

unsafe fn with_params(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    params: *mut cuda_abi::driver_types::CUDA_GRAPH_INSTANTIATE_PARAMS,
    call: impl FnOnce() -> CUresult,
) -> CUresult {
    // SAFETY: the caller's parameters when non-null.
    let upload = !params.is_null() && unsafe { (*params).flags } & FLAG_UPLOAD != 0;
    let s = shim();
    if !upload || !s.mem_on() || exec.is_null() {
        return instantiate_with(exec, graph, call);
    }
    // Uploading at instantiation backs the memory at once: charge it first,
    // from the graph itself (the executable does not exist yet).
    let Some(m) = plan(s, graph) else {
        return call();
    };
    let _alone = s.graph_lock.write().unwrap_or_else(|e| e.into_inner());
    match charge_then(s, &m, call) {
        CallResult::Done(r) if r.is_success() => {
            // SAFETY: written by the driver on success (checked non-null).
            s.graph_mem
                .insert(unsafe { *exec } as u64, ExecMem { backed: true, ..m });
            r
        }
        CallResult::Done(r) => r,
        CallResult::KeptBacked(r) => {
            // No executable to attach it to: it waits in the pool for a trim.
            s.graph_mem.insert(
                s.residue_key(),
                ExecMem {
                    backed: true,
                    destroyed: true,
                    ..m
                },
            );
            r
        }
    }
}

pub unsafe fn instantiate_with_params(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    params: *mut cuda_abi::driver_types::CUDA_GRAPH_INSTANTIATE_PARAMS,
) -> CUresult {
    let f = real_fn!(cuGraphInstantiateWithParams);
    // SAFETY: the caller's arguments, passed on.
    unsafe { with_params(exec, graph, params, || f(exec, graph, params)) }
}

pub unsafe fn instantiate_with_params_ptsz(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    params: *mut cuda_abi::driver_types::CUDA_GRAPH_INSTANTIATE_PARAMS,
) -> CUresult {
    let f = real_fn!(cuGraphInstantiateWithParams_ptsz);
    // SAFETY: the caller's arguments, passed on.
    unsafe { with_params(exec, graph, params, || f(exec, graph, params)) }
}

pub unsafe fn upload(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let f = real_fn!(cuGraphUpload);
    // SAFETY: the caller's arguments, passed on.
    launch(exec, || unsafe { f(exec, stream) })
}

pub unsafe fn upload_ptsz(exec: CUgraphExec, stream: CUstream) -> CUresult {
    let f = real_fn!(cuGraphUpload_ptsz);
    // SAFETY: the caller's arguments, passed on.
    launch(exec, || unsafe { f(exec, stream) })
}

/// The executable's backed memory stays charged, as the device's graph
/// pool keeps it, until a trim.
pub unsafe fn exec_destroy(exec: CUgraphExec) -> CUresult {
    let f = real_fn!(cuGraphExecDestroy);
    let s = shim();
    let _alone = s.graph_lock.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(exec) };
    if r.is_success() {
        if let Some(m) = s.graph_mem.remove(exec as u64) {
            if m.backed {
                s.graph_mem.insert(
                    s.residue_key(),
                    ExecMem {
                        destroyed: true,
                        ..m
                    },
                );
            }
        }
    }
    r
}

/// After a trim, the driver says how much graph memory it still holds on
/// the device; when none, every executable's charge there is given back
/// (they will be charged again when next launched). Otherwise the charges
/// stay: the shim cannot tell which executables the driver trimmed, and
/// charging too much for a while is the safe side.
pub unsafe fn mem_trim(dev: CUdevice) -> CUresult {
    let f = real_fn!(cuDeviceGraphMemTrim);
    let s = shim();
    let _alone = s.graph_lock.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the caller's argument, passed on.
    let r = unsafe { f(dev) };
    if r.is_success() && s.mem_on() && real::graph_mem_reserved(dev) == Ok(0) {
        let Ok(d16) = u16::try_from(dev) else {
            return r;
        };
        for (k, m) in s
            .graph_mem
            .take_where(|m| m.backed && m.charges().iter().any(|(d, _)| *d == d16))
        {
            give_back(s, &m);
            if !m.destroyed {
                s.graph_mem.insert(k, ExecMem { backed: false, ..m });
            }
        }
    }
    r
}

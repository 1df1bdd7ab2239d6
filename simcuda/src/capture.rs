//! Stream capture: while a stream captures, launches, async copies and
//! memsets append nodes to the capture's graph instead of running. Events
//! recorded during capture carry the capture's dependencies, so another
//! stream that waits on them joins the capture (fork/join capture).

use crate::copy::Op;
use crate::entry::{out, out_opt, read, Res, INVALID_VALUE};
use crate::event::Event;
use crate::graph::{self, Graph, NodeKind};
use crate::module::Function;
use crate::process::{self, handle_of};
use crate::stream::{self, DefaultStream, Kind, Stream};
use cuda_abi::driver_types::{
    CUDA_KERNEL_NODE_PARAMS_v2, CU_STREAM_CAPTURE_STATUS_ACTIVE,
    CU_STREAM_CAPTURE_STATUS_INVALIDATED, CU_STREAM_CAPTURE_STATUS_NONE,
};
use cuda_abi::{CUgraph, CUgraphNode, CUresult, CUstream};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One capture sequence, shared by the streams that joined it.
pub struct Shared {
    pub id: u64,
    pub graph: Arc<Graph>,
    /// Made by this capture (else the caller's graph, captured into).
    owned: bool,
    origin: u64,
    invalid: AtomicBool,
    joined: Mutex<Vec<Weak<Stream>>>,
}

/// A stream's part in a capture: the nodes its next operation depends on.
pub struct StreamCapture {
    pub shared: Arc<Shared>,
    deps: Vec<CUgraphNode>,
}

// SAFETY: node handles are addresses of registered nodes, used only as keys.
unsafe impl Send for StreamCapture {}

/// An event recorded in a capturing stream.
pub struct CapturedRecord {
    shared: Arc<Shared>,
    deps: Vec<CUgraphNode>,
}

// SAFETY: as for StreamCapture.
unsafe impl Send for CapturedRecord {}

pub fn invalidate(s: &Stream) {
    if let Some(c) = s.capture().as_ref() {
        c.shared.invalid.store(true, Ordering::Release);
    }
}

fn append(s: &Stream, kind: NodeKind) -> Res {
    let p = process::initialized()?;
    let mut g = s.capture();
    let c = g.as_mut().ok_or(CUresult::ERROR_ILLEGAL_STATE)?;
    if c.shared.invalid.load(Ordering::Acquire) {
        return Err(CUresult::ERROR_STREAM_CAPTURE_INVALIDATED);
    }
    let deps: Vec<usize> = c.deps.iter().map(|d| *d as usize).collect();
    let n = graph::add_node(p, &c.shared.graph, kind, &deps)?;
    c.deps = vec![handle_of(&n)];
    Ok(())
}

pub fn add_op(s: &Stream, op: Op) -> Res {
    append(s, NodeKind::Op(op))
}

/// `cuMemAllocAsync` while capturing: a memory-allocation node, whose
/// address is returned at once (see `graph` for when it is backed).
pub fn add_alloc(s: &Stream, device: i32, size: u64) -> Res<u64> {
    let p = process::initialized()?;
    let a = graph::graph_alloc(p, device, size)?;
    let base = a.base;
    append(s, NodeKind::MemAlloc(a))?;
    Ok(base)
}

/// `cuMemFreeAsync` of graph memory while capturing: a memory-free node.
pub fn add_free(s: &Stream, dptr: u64) -> Res {
    if !graph::is_graph_alloc(process::initialized()?, dptr) {
        return Err(INVALID_VALUE);
    }
    append(s, NodeKind::MemFree(dptr))
}

/// A host function launched while capturing: a host node.
pub fn add_host(s: &Stream, f: crate::stream::HostFn, data: usize) -> Res {
    append(s, NodeKind::Host { f, data })
}

pub fn add_kernel(
    s: &Stream,
    func: Arc<Function>,
    duration_ns: u64,
    grid: [u32; 3],
    block: [u32; 3],
    shmem: u32,
) -> Res {
    let params = CUDA_KERNEL_NODE_PARAMS_v2 {
        func: handle_of(&func),
        gridDimX: grid[0],
        gridDimY: grid[1],
        gridDimZ: grid[2],
        blockDimX: block[0],
        blockDimY: block[1],
        blockDimZ: block[2],
        sharedMemBytes: shmem,
        kernelParams: std::ptr::null_mut(),
        extra: std::ptr::null_mut(),
        kern: std::ptr::null_mut(),
        ctx: handle_of(&s.ctx),
    };
    append(
        s,
        NodeKind::Kernel {
            _func: func,
            duration_ns,
            params,
        },
    )
}

/// Handles `cuEventRecord` on a capturing stream; `Ok(true)` if it was one.
pub fn on_record_event(s: &Stream, e: &Event) -> Res<bool> {
    let g = s.capture();
    let Some(c) = g.as_ref() else {
        return Ok(false);
    };
    e.state().captured = Some(CapturedRecord {
        shared: c.shared.clone(),
        deps: c.deps.clone(),
    });
    Ok(true)
}

/// Handles `cuStreamWaitEvent` on an event recorded during capture.
pub fn on_wait_event(s: &Arc<Stream>, e: &Event) -> Res {
    let st = e.state();
    let Some(rec) = st.captured.as_ref() else {
        return Ok(());
    };
    let mut g = s.capture();
    match g.as_mut() {
        Some(c) if Arc::ptr_eq(&c.shared, &rec.shared) => {
            for d in &rec.deps {
                if !c.deps.contains(d) {
                    c.deps.push(*d);
                }
            }
            Ok(())
        }
        Some(_) => Err(CUresult(902)), // CUDA_ERROR_STREAM_CAPTURE_MERGE
        None => {
            rec.shared
                .joined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::downgrade(s));
            *g = Some(StreamCapture {
                shared: rec.shared.clone(),
                deps: rec.deps.clone(),
            });
            Ok(())
        }
    }
}

thread_local! {
    static MODE: Cell<u32> = const { Cell::new(0) };
}

fn begin(h: CUstream, ds: DefaultStream, mode: u32) -> Res {
    begin_into(h, ds, mode, None, Vec::new())
}

/// Begins a capture into `into` (an existing graph, after `deps`) or a new graph.
fn begin_into(
    h: CUstream,
    ds: DefaultStream,
    mode: u32,
    into: Option<Arc<Graph>>,
    deps: Vec<CUgraphNode>,
) -> Res {
    let p = process::initialized()?;
    let s = stream::resolve(h, ds)?;
    if mode > 2 {
        return Err(INVALID_VALUE);
    }
    if s.kind == Kind::Legacy {
        return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    let mut g = s.capture();
    if g.is_some() {
        return Err(CUresult::ERROR_ILLEGAL_STATE);
    }
    let owned = into.is_none();
    let shared = Arc::new(Shared {
        id: p.next_id(),
        graph: into.unwrap_or_else(|| graph::create(p)),
        owned,
        origin: s.id,
        invalid: AtomicBool::new(false),
        joined: Mutex::new(Vec::new()),
    });
    *g = Some(StreamCapture { shared, deps });
    Ok(())
}

export_pt! {
    fn cuStreamBeginCapture / cuStreamBeginCapture_ptsz(h: CUstream) |ds| { begin(h, ds, 0) }
}

export_pt! {
    fn cuStreamBeginCapture_v2 / cuStreamBeginCapture_v2_ptsz(h: CUstream, mode: u32) |ds| { begin(h, ds, mode) }
}

export_pt! {
    fn cuStreamEndCapture / cuStreamEndCapture_ptsz(h: CUstream, pgraph: *mut CUgraph) |ds| {
        let p = process::initialized()?;
        let s = stream::resolve(h, ds)?;
        if pgraph.is_null() {
            return Err(INVALID_VALUE);
        }
        let shared = {
            let g = s.capture();
            let c = g.as_ref().ok_or(CUresult::ERROR_ILLEGAL_STATE)?;
            if c.shared.origin != s.id {
                return Err(CUresult::ERROR_STREAM_CAPTURE_UNMATCHED);
            }
            c.shared.clone()
        };
        *s.capture() = None;
        for j in shared.joined.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            if let Some(js) = j.upgrade() {
                *js.capture() = None;
            }
        }
        if shared.invalid.load(Ordering::Acquire) {
            // A graph made by the capture goes; the caller's stays theirs.
            if !shared.owned {
                // SAFETY: caller's output pointer (checked non-NULL).
                unsafe { out(pgraph, std::ptr::null_mut())? };
                return Err(CUresult::ERROR_STREAM_CAPTURE_INVALIDATED);
            }
            if let Ok(g) = p.graphs.remove(handle_of(&shared.graph)) {
                graph::destroy(p, &g);
            }
            // SAFETY: caller's output pointer (checked non-NULL).
            unsafe { out(pgraph, std::ptr::null_mut())? };
            return Err(CUresult::ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(pgraph, handle_of(&shared.graph)) }
    }
}

fn status(s: &Stream) -> (u32, u64) {
    match s.capture().as_ref() {
        None => (CU_STREAM_CAPTURE_STATUS_NONE, 0),
        Some(c) if c.shared.invalid.load(Ordering::Acquire) => {
            (CU_STREAM_CAPTURE_STATUS_INVALIDATED, c.shared.id)
        }
        Some(c) => (CU_STREAM_CAPTURE_STATUS_ACTIVE, c.shared.id),
    }
}

export_pt! {
    fn cuStreamIsCapturing / cuStreamIsCapturing_ptsz(h: CUstream, st: *mut u32) |ds| {
        let s = stream::resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(st, status(&s).0) }
    }
}

export_pt! {
    fn cuStreamGetCaptureInfo / cuStreamGetCaptureInfo_ptsz(h: CUstream, st: *mut u32, id: *mut u64) |ds| {
        let s = stream::resolve(h, ds)?;
        let (a, b) = status(&s);
        // SAFETY: caller's output pointers.
        unsafe {
            out(st, a)?;
            out_opt(id, b);
        }
        Ok(())
    }
}

/// Writes the capture info outputs shared by the v2 and v3 forms.
///
/// # Safety
/// All pointers are NULL or valid for writes of their types.
unsafe fn info(
    s: &Stream,
    st: *mut u32,
    id: *mut u64,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    edges: *mut *const c_void,
    ndeps: *mut usize,
) -> Res {
    let (a, b) = status(s);
    let g = s.capture();
    // SAFETY: per the function contract. The dependency array stays valid
    // until the next operation on the stream, as CUDA specifies.
    unsafe {
        out(st, a)?;
        out_opt(id, b);
        out_opt(edges, std::ptr::null());
        match g.as_ref() {
            Some(c) if a == CU_STREAM_CAPTURE_STATUS_ACTIVE => {
                out_opt(graph, handle_of(&c.shared.graph));
                out_opt(deps, c.deps.as_ptr());
                out_opt(ndeps, c.deps.len());
            }
            _ => {
                out_opt(graph, std::ptr::null_mut());
                out_opt(deps, std::ptr::null());
                out_opt(ndeps, 0);
            }
        }
    }
    Ok(())
}

export_pt! {
    fn cuStreamGetCaptureInfo_v2 / cuStreamGetCaptureInfo_v2_ptsz(h: CUstream, st: *mut u32, id: *mut u64, graph: *mut CUgraph, deps: *mut *const CUgraphNode, ndeps: *mut usize) |ds| {
        let s = stream::resolve(h, ds)?;
        // SAFETY: caller's output pointers.
        unsafe { info(&s, st, id, graph, deps, std::ptr::null_mut(), ndeps) }
    }
}

export_pt! {
    fn cuStreamGetCaptureInfo_v3 / cuStreamGetCaptureInfo_v3_ptsz(h: CUstream, st: *mut u32, id: *mut u64, graph: *mut CUgraph, deps: *mut *const CUgraphNode, edges: *mut *const c_void, ndeps: *mut usize) |ds| {
        let s = stream::resolve(h, ds)?;
        // SAFETY: caller's output pointers.
        unsafe { info(&s, st, id, graph, deps, edges, ndeps) }
    }
}

export! {
    /// The thread's capture interaction mode (global/thread-local/relaxed),
    /// kept per thread; this driver enforces no cross-stream capture rules.
    fn cuThreadExchangeStreamCaptureMode(mode: *mut u32) {
        // SAFETY: caller's in/out pointer.
        let m = unsafe { read(mode)? };
        if m > 2 {
            return Err(INVALID_VALUE);
        }
        let old = MODE.try_with(|c| c.replace(m)).map_err(|_| CUresult::ERROR_DEINITIALIZED)?;
        // SAFETY: caller's in/out pointer.
        unsafe { out(mode, old) }
    }
}

/// Dependencies given by the caller, which must be nodes of `g`.
///
/// # Safety
/// `deps` holds `n` node handles.
unsafe fn deps_of(g: &Graph, deps: *const CUgraphNode, n: usize) -> Res<Vec<CUgraphNode>> {
    let p = process::initialized()?;
    // SAFETY: per the function contract.
    let d = unsafe { crate::entry::slice(deps, n)? };
    for h in d {
        if p.nodes.get(*h)?.graph != g.id {
            return Err(INVALID_VALUE);
        }
    }
    Ok(d.to_vec())
}

/// Edge data must describe default edges (all zero) where given.
///
/// # Safety
/// `edges` is NULL or holds `n` 8-byte edge records.
unsafe fn default_edges(edges: *const c_void, n: usize) -> Res {
    if edges.is_null() {
        return Ok(());
    }
    // SAFETY: per the function contract.
    let e = unsafe { crate::entry::slice(edges.cast::<[u8; 8]>(), n)? };
    if e.iter().any(|x| x.iter().any(|b| *b != 0)) {
        return Err(CUresult::ERROR_NOT_SUPPORTED);
    }
    Ok(())
}

export_pt! {
    /// Captures into an existing graph, after `deps`.
    fn cuStreamBeginCaptureToGraph / cuStreamBeginCaptureToGraph_ptsz(h: CUstream, graph: CUgraph, deps: *const CUgraphNode, edges: *const c_void, n: usize, mode: u32) |ds| {
        let g = process::initialized()?.graphs.get(graph)?;
        // SAFETY: the caller's arrays of n entries.
        let d = unsafe {
            default_edges(edges, n)?;
            deps_of(&g, deps, n)?
        };
        begin_into(h, ds, mode, Some(g), d)
    }
}

/// CU_STREAM_ADD_CAPTURE_DEPENDENCIES (0), CU_STREAM_SET_CAPTURE_DEPENDENCIES (1).
fn update_deps(
    h: CUstream,
    ds: DefaultStream,
    deps: *mut CUgraphNode,
    n: usize,
    flags: u32,
) -> Res {
    let s = stream::resolve(h, ds)?;
    if flags > 1 {
        return Err(INVALID_VALUE);
    }
    let mut g = s.capture();
    let c = g.as_mut().ok_or(CUresult::ERROR_ILLEGAL_STATE)?;
    if c.shared.invalid.load(Ordering::Acquire) {
        return Err(CUresult::ERROR_STREAM_CAPTURE_INVALIDATED);
    }
    // SAFETY: the caller's array of n node handles.
    let d = unsafe { deps_of(&c.shared.graph, deps, n)? };
    if flags == 1 {
        c.deps = d;
    } else {
        for x in d {
            if !c.deps.contains(&x) {
                c.deps.push(x);
            }
        }
    }
    Ok(())
}

export_pt! {
    fn cuStreamUpdateCaptureDependencies / cuStreamUpdateCaptureDependencies_ptsz(h: CUstream, deps: *mut CUgraphNode, n: usize, flags: u32) |ds| {
        update_deps(h, ds, deps, n, flags)
    }
}

export_pt! {
    fn cuStreamUpdateCaptureDependencies_v2 / cuStreamUpdateCaptureDependencies_v2_ptsz(h: CUstream, deps: *mut CUgraphNode, edges: *const c_void, n: usize, flags: u32) |ds| {
        // SAFETY: the caller's edge data, n records when given.
        unsafe { default_edges(edges, n)? };
        update_deps(h, ds, deps, n, flags)
    }
}

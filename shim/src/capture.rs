//! Stream capture bookkeeping. A launch into a stream that is being
//! captured into a graph runs nothing, so the gate must let it through
//! untouched (and must not record its events into the graph). Asking the
//! driver (`cuStreamIsCapturing`) on every launch costs a call, so the shim
//! counts the captures in progress and asks only while there are some.
//!
//! Every entry point that starts a capture is hooked (v1, v2, to-graph,
//! to-CIG, and their per-thread-stream variants); a capture counts from a
//! successful begin until an end after which the stream no longer captures.

use crate::hooks::real_fn;
use crate::real;
use crate::state::shim;
use cuda_abi::*;
use std::ffi::{c_uint, c_void};

fn began(r: CUresult) -> CUresult {
    if r.is_success() {
        shim().capture_began();
    }
    r
}

/// Runs an end-capture call on `stream`: a capture is over when the stream
/// captured before the call and no longer does after it (whatever the call
/// returned; a stray end on a stream that was not capturing changes nothing).
fn end_with(stream: CUstream, per_thread: bool, call: impl FnOnce() -> CUresult) -> CUresult {
    let stream = if per_thread && stream.is_null() {
        CU_STREAM_PER_THREAD
    } else {
        stream
    };
    let was = real::stream_is_capturing(stream);
    let r = call();
    if was && !real::stream_is_capturing(stream) {
        shim().capture_ended();
    }
    r
}

pub unsafe fn begin_v1(stream: CUstream) -> CUresult {
    let f = real_fn!(cuStreamBeginCapture);
    // SAFETY: the caller's argument, passed on.
    began(unsafe { f(stream) })
}

pub unsafe fn begin_v1_ptsz(stream: CUstream) -> CUresult {
    let f = real_fn!(cuStreamBeginCapture_ptsz);
    // SAFETY: the caller's argument, passed on.
    began(unsafe { f(stream) })
}

pub unsafe fn begin(stream: CUstream, mode: c_uint) -> CUresult {
    let f = real_fn!(cuStreamBeginCapture_v2);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, mode) })
}

pub unsafe fn begin_ptsz(stream: CUstream, mode: c_uint) -> CUresult {
    let f = real_fn!(cuStreamBeginCapture_v2_ptsz);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, mode) })
}

pub unsafe fn begin_to_graph(
    stream: CUstream,
    graph: CUgraph,
    deps: *const CUgraphNode,
    edges: *const c_void,
    n: usize,
    mode: c_uint,
) -> CUresult {
    let f = real_fn!(cuStreamBeginCaptureToGraph);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, graph, deps, edges, n, mode) })
}

pub unsafe fn begin_to_graph_ptsz(
    stream: CUstream,
    graph: CUgraph,
    deps: *const CUgraphNode,
    edges: *const c_void,
    n: usize,
    mode: c_uint,
) -> CUresult {
    let f = real_fn!(cuStreamBeginCaptureToGraph_ptsz);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, graph, deps, edges, n, mode) })
}

/// CUDA 13.3's recapture into an existing graph: a capture like the others.
pub unsafe fn begin_recapture(
    stream: CUstream,
    mode: c_uint,
    graph: CUgraph,
    callback: *mut c_void,
    data: *mut c_void,
) -> CUresult {
    let f = real_fn!(cuStreamBeginRecaptureToGraph);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, mode, graph, callback, data) })
}

pub unsafe fn begin_recapture_ptsz(
    stream: CUstream,
    mode: c_uint,
    graph: CUgraph,
    callback: *mut c_void,
    data: *mut c_void,
) -> CUresult {
    let f = real_fn!(cuStreamBeginRecaptureToGraph_ptsz);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, mode, graph, callback, data) })
}

pub unsafe fn begin_to_cig(stream: CUstream, params: *mut c_void) -> CUresult {
    let f = real_fn!(cuStreamBeginCaptureToCig);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, params) })
}

pub unsafe fn begin_to_cig_ptsz(stream: CUstream, params: *mut c_void) -> CUresult {
    let f = real_fn!(cuStreamBeginCaptureToCig_ptsz);
    // SAFETY: the caller's arguments, passed on.
    began(unsafe { f(stream, params) })
}

pub unsafe fn end(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    let f = real_fn!(cuStreamEndCapture);
    // SAFETY: the caller's arguments, passed on.
    end_with(stream, false, || unsafe { f(stream, graph) })
}

pub unsafe fn end_ptsz(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    let f = real_fn!(cuStreamEndCapture_ptsz);
    // SAFETY: the caller's arguments, passed on.
    end_with(stream, true, || unsafe { f(stream, graph) })
}

pub unsafe fn end_to_cig(stream: CUstream) -> CUresult {
    let f = real_fn!(cuStreamEndCaptureToCig);
    // SAFETY: the caller's argument, passed on.
    end_with(stream, false, || unsafe { f(stream) })
}

pub unsafe fn end_to_cig_ptsz(stream: CUstream) -> CUresult {
    let f = real_fn!(cuStreamEndCaptureToCig_ptsz);
    // SAFETY: the caller's argument, passed on.
    end_with(stream, true, || unsafe { f(stream) })
}

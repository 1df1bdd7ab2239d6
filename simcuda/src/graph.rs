//! CUDA graphs: explicit construction, instantiation, launch. A launch is
//! one `Graph` work item whose duration is the sum of its kernel nodes'
//! durations; memcpy/memset nodes replay their data effects at launch.

use crate::copy::{self, Op};
use crate::entry::{out, read, slice, Res, INVALID_VALUE};
use crate::module::Function;
use crate::process::{self, handle_of, Handle, Magic, Process};
use crate::stream;
use cuda_abi::driver_types::{
    graph_node_type, CUDA_KERNEL_NODE_PARAMS_v1, CUDA_KERNEL_NODE_PARAMS_v2,
    CUDA_GRAPH_INSTANTIATE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS,
};
use cuda_abi::{CUcontext, CUgraph, CUgraphExec, CUgraphNode, CUresult, CUstream};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

pub enum NodeKind {
    /// The function is kept alive as long as the node refers to it.
    Kernel {
        _func: Arc<Function>,
        duration_ns: u64,
        params: CUDA_KERNEL_NODE_PARAMS_v2,
    },
    Op(Op),
    Empty,
}

pub struct Node {
    magic: Magic,
    pub graph: u64,
    pub kind: NodeKind,
    pub deps: Vec<usize>,
}

// SAFETY: the raw pointers in kernel parameters are caller data that is only
// stored and handed back, never dereferenced after the node is created.
unsafe impl Send for Node {}
// SAFETY: as above.
unsafe impl Sync for Node {}

impl Handle for Node {
    const MAGIC: u32 = 0x90DE_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

pub struct Graph {
    magic: Magic,
    pub id: u64,
    pub nodes: Mutex<Vec<Arc<Node>>>,
}

impl Handle for Graph {
    const MAGIC: u32 = 0x96A9_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

pub struct GraphExec {
    magic: Magic,
    pub duration_ns: u64,
    pub ops: Vec<Op>,
}

impl Handle for GraphExec {
    const MAGIC: u32 = 0x96E8_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

pub fn create(p: &Process) -> Arc<Graph> {
    p.graphs.insert(Graph {
        magic: Magic::new(Graph::MAGIC),
        id: p.next_id(),
        nodes: Mutex::new(Vec::new()),
    })
}

/// Adds a node whose dependencies must be nodes of the same graph.
pub fn add_node(p: &Process, g: &Arc<Graph>, kind: NodeKind, deps: &[usize]) -> Res<Arc<Node>> {
    for d in deps {
        let n = p.nodes.get(*d as *mut c_void)?;
        if n.graph != g.id {
            return Err(INVALID_VALUE);
        }
    }
    let n = p.nodes.insert(Node {
        magic: Magic::new(Node::MAGIC),
        graph: g.id,
        kind,
        deps: deps.to_vec(),
    });
    g.nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(n.clone());
    Ok(n)
}

fn destroy(p: &Process, g: &Graph) {
    for n in g.nodes.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = p.nodes.remove(handle_of(&n));
    }
}

/// # Safety
/// `deps` holds `n` node handles.
unsafe fn dep_list(deps: *const CUgraphNode, n: usize) -> Res<Vec<usize>> {
    // SAFETY: per the function contract.
    Ok(unsafe { slice(deps, n)? }
        .iter()
        .map(|d| *d as usize)
        .collect())
}

fn add(
    pnode: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    kind: impl FnOnce() -> Res<NodeKind>,
) -> Res {
    let p = process::initialized()?;
    let g = p.graphs.get(graph)?;
    if pnode.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: caller's dependency array of n handles.
    let deps = unsafe { dep_list(deps, n)? };
    let node = add_node(p, &g, kind()?, &deps)?;
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(pnode, handle_of(&node)) }
}

fn kernel_kind(k: CUDA_KERNEL_NODE_PARAMS_v2) -> Res<NodeKind> {
    let h = if k.func.is_null() { k.kern } else { k.func };
    let func = crate::module::resolve(h)?;
    // SAFETY: the node parameters' argument arrays, as CUDA defines them.
    let duration_ns = unsafe { crate::launch::duration(&func, k.kernelParams, k.extra)? };
    Ok(NodeKind::Kernel {
        _func: func,
        duration_ns,
        params: k,
    })
}

export! {
    fn cuGraphCreate(graph: *mut CUgraph, flags: u32) {
        let p = process::initialized()?;
        if graph.is_null() || flags != 0 {
            return Err(INVALID_VALUE);
        }
        let g = create(p);
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(graph, handle_of(&g)) }
    }
}

export! {
    fn cuGraphDestroy(graph: CUgraph) {
        let p = process::initialized()?;
        let g = p.graphs.remove(graph)?;
        destroy(p, &g);
        Ok(())
    }
}

export! {
    fn cuGraphAddKernelNode_v2(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *const CUDA_KERNEL_NODE_PARAMS_v2) {
        add(pnode, graph, deps, n, || {
            // SAFETY: caller's node parameters.
            kernel_kind(unsafe { read(params)? })
        })
    }
}

export! {
    fn cuGraphAddKernelNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *const CUDA_KERNEL_NODE_PARAMS_v1) {
        add(pnode, graph, deps, n, || {
            // SAFETY: caller's node parameters.
            let k = unsafe { read(params)? };
            kernel_kind(CUDA_KERNEL_NODE_PARAMS_v2 {
                func: k.func, gridDimX: k.gridDimX, gridDimY: k.gridDimY, gridDimZ: k.gridDimZ,
                blockDimX: k.blockDimX, blockDimY: k.blockDimY, blockDimZ: k.blockDimZ,
                sharedMemBytes: k.sharedMemBytes, kernelParams: k.kernelParams, extra: k.extra,
                kern: std::ptr::null_mut(), ctx: std::ptr::null_mut(),
            })
        })
    }
}

export! {
    fn cuGraphAddMemcpyNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *const CUDA_MEMCPY3D, ctx: CUcontext) {
        crate::context::resolve(ctx)?;
        add(pnode, graph, deps, n, || {
            // SAFETY: caller's copy parameters.
            Ok(NodeKind::Op(Op::Copy(unsafe { read(params)? })))
        })
    }
}

export! {
    fn cuGraphAddMemsetNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *const CUDA_MEMSET_NODE_PARAMS, ctx: CUcontext) {
        crate::context::resolve(ctx)?;
        add(pnode, graph, deps, n, || {
            // SAFETY: caller's memset parameters.
            Ok(NodeKind::Op(Op::Set(unsafe { read(params)? })))
        })
    }
}

export! {
    fn cuGraphAddEmptyNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize) {
        add(pnode, graph, deps, n, || Ok(NodeKind::Empty))
    }
}

fn list(nodes: &[Arc<Node>], out_nodes: *mut CUgraphNode, count: *mut usize) -> Res {
    if count.is_null() {
        return Err(INVALID_VALUE);
    }
    if out_nodes.is_null() {
        // SAFETY: caller's output pointer (checked non-NULL).
        return unsafe { out(count, nodes.len()) };
    }
    // SAFETY: caller's in/out count (checked non-NULL).
    let cap = unsafe { read(count)? };
    for (i, n) in nodes.iter().take(cap).enumerate() {
        // SAFETY: the caller's array holds `cap` entries.
        unsafe { out(out_nodes.add(i), handle_of(n))? };
    }
    // SAFETY: caller's output pointer.
    unsafe { out(count, nodes.len().min(cap)) }
}

export! {
    fn cuGraphGetNodes(graph: CUgraph, nodes: *mut CUgraphNode, count: *mut usize) {
        let g = process::initialized()?.graphs.get(graph)?;
        let v = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        list(&v, nodes, count)
    }
}

export! {
    fn cuGraphGetRootNodes(graph: CUgraph, nodes: *mut CUgraphNode, count: *mut usize) {
        let g = process::initialized()?.graphs.get(graph)?;
        let v: Vec<Arc<Node>> = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|n| n.deps.is_empty()).cloned().collect();
        list(&v, nodes, count)
    }
}

export! {
    fn cuGraphNodeGetType(node: CUgraphNode, ty: *mut u32) {
        let n = process::initialized()?.nodes.get(node)?;
        let t = match n.kind {
            NodeKind::Kernel { .. } => graph_node_type::KERNEL,
            NodeKind::Op(Op::Copy(_)) => graph_node_type::MEMCPY,
            NodeKind::Op(Op::Set(_)) => graph_node_type::MEMSET,
            NodeKind::Empty => graph_node_type::EMPTY,
        };
        // SAFETY: caller's output pointer.
        unsafe { out(ty, t) }
    }
}

export! {
    fn cuGraphKernelNodeGetParams_v2(node: CUgraphNode, params: *mut CUDA_KERNEL_NODE_PARAMS_v2) {
        let n = process::initialized()?.nodes.get(node)?;
        let NodeKind::Kernel { params: k, .. } = &n.kind else { return Err(INVALID_VALUE) };
        // SAFETY: caller's output pointer.
        unsafe { out(params, *k) }
    }
}

fn instantiate(exec: *mut CUgraphExec, graph: CUgraph) -> Res<Arc<GraphExec>> {
    let p = process::initialized()?;
    let g = p.graphs.get(graph)?;
    if exec.is_null() {
        return Err(INVALID_VALUE);
    }
    let nodes = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Nodes only depend on earlier nodes, so insertion order is a topological order.
    let mut duration_ns = 0u64;
    let mut ops = Vec::new();
    for n in &nodes {
        match &n.kind {
            NodeKind::Kernel { duration_ns: d, .. } => duration_ns = duration_ns.saturating_add(*d),
            NodeKind::Op(op) => ops.push(*op),
            NodeKind::Empty => {}
        }
    }
    let e = p.execs.insert(GraphExec {
        magic: Magic::new(GraphExec::MAGIC),
        duration_ns,
        ops,
    });
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(exec, handle_of(&e))? };
    Ok(e)
}

export! {
    fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: u64) {
        if flags & !0xf != 0 {
            return Err(INVALID_VALUE);
        }
        instantiate(exec, graph).map(|_| ())
    }
}

export_pt! {
    fn cuGraphInstantiateWithParams / cuGraphInstantiateWithParams_ptsz(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) |ds| {
        // SAFETY: caller's parameters.
        let mut prm = unsafe { read(params)? };
        if prm.flags & !0xf != 0 {
            return Err(INVALID_VALUE);
        }
        // CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD (2): upload in the given stream.
        if prm.flags & 2 != 0 {
            stream::resolve(prm.hUploadStream, ds)?;
        }
        let r = instantiate(exec, graph);
        prm.result_out = if r.is_ok() { 0 } else { 1 };
        prm.hErrNode_out = std::ptr::null_mut();
        // SAFETY: caller's parameters, written back with the result.
        unsafe { out(params, prm)? };
        r.map(|_| ())
    }
}

export_pt! {
    /// There is nothing to upload to a simulated device; the stream and graph are validated.
    fn cuGraphUpload / cuGraphUpload_ptsz(exec: CUgraphExec, h: CUstream) |ds| {
        process::initialized()?.execs.get(exec)?;
        stream::resolve(h, ds)?;
        Ok(())
    }
}

export_pt! {
    fn cuGraphLaunch / cuGraphLaunch_ptsz(exec: CUgraphExec, h: CUstream) |ds| {
        let p = process::initialized()?;
        let e = p.execs.get(exec)?;
        let s = stream::resolve(h, ds)?;
        if s.capturing() {
            crate::capture::invalidate(&s);
            return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        for op in &e.ops {
            copy::exec(p, op)?;
        }
        s.submit(simgpu::Work { kind: simgpu::WorkKind::Graph, duration_ns: e.duration_ns, tag: exec as u64 })?;
        Ok(())
    }
}

export! {
    fn cuGraphExecDestroy(exec: CUgraphExec) {
        process::initialized()?.execs.remove(exec)?;
        Ok(())
    }
}

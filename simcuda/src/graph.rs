//! CUDA graphs: explicit construction, instantiation, launch, executable
//! updates. A launch is one `Graph` work item whose duration is the sum of
//! its kernel nodes' durations (split where a host node must run between
//! kernels); memcpy/memset nodes replay their data effects at launch; host
//! nodes run on the context's host thread in order.
//!
//! **Graph memory** (memory-allocation nodes, `cuGraphAddMemAllocNode` or
//! `cuMemAllocAsync` during capture): the node's address is fixed when the
//! node is made (a reserved, inaccessible range); physical memory is mapped
//! there and charged to the ledger when an executable graph is uploaded or
//! first launched, and stays, as CUDA's graph pool keeps it, across launches,
//! past the graph's free nodes and past `cuGraphExecDestroy`, until
//! `cuDeviceGraphMemTrim` returns what no running launch uses and no
//! unfreed allocation holds; a new executable of the same graph reuses what
//! a destroyed one left. User objects an executable holds are released
//! after its last launch's work in its stream. A graph with
//! allocation nodes has one executable at a time, and cannot be relaunched
//! while the previous launch's allocations are unfreed (unless instantiated
//! with AUTO_FREE_ON_LAUNCH), as in CUDA.

use crate::copy::{self, Op};
use crate::entry::{out, out_opt, read, slice, Res, INVALID_VALUE};
use crate::module::Function;
use crate::process::{self, handle_of, Handle, Magic, Process};
use crate::stream;
use cuda_abi::driver_types::{
    graph_node_type, CUDA_KERNEL_NODE_PARAMS_v1, CUDA_KERNEL_NODE_PARAMS_v2,
    CUDA_GRAPH_INSTANTIATE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS,
};
use cuda_abi::{CUcontext, CUdeviceptr, CUgraph, CUgraphExec, CUgraphNode, CUresult, CUstream};
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, Weak};

pub enum NodeKind {
    /// The function is kept alive as long as the node refers to it.
    Kernel {
        _func: Arc<Function>,
        duration_ns: u64,
        params: CUDA_KERNEL_NODE_PARAMS_v2,
    },
    Op(Op),
    Empty,
    Host {
        f: crate::stream::HostFn,
        data: usize,
    },
    MemAlloc(Arc<GraphAlloc>),
    MemFree(u64),
}

/// The memory of one allocation node: a reserved address range, mapped and
/// charged while an executable graph holds it physically.
pub struct GraphAlloc {
    pub base: u64,
    /// Bytes asked for.
    pub size: u64,
    /// Bytes reserved and charged (whole ledger pages).
    pub charged: u64,
    pub device: i32,
    /// The live executable graph that backs it, if any.
    owner: Mutex<Option<u64>>,
    /// Allocated by a launch and not freed yet (by a free node, `cuMemFree`
    /// or `cuMemFreeAsync`): CUDA refuses to relaunch the graph until then.
    pub live: std::sync::atomic::AtomicBool,
}

impl Drop for GraphAlloc {
    fn drop(&mut self) {
        crate::memory::unmap(self.base, self.charged as usize);
    }
}

pub struct Node {
    magic: Magic,
    pub graph: u64,
    kind: Mutex<NodeKind>,
    pub deps: Vec<usize>,
}

impl Node {
    pub fn kind(&self) -> std::sync::MutexGuard<'_, NodeKind> {
        self.kind.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    /// User objects the graph holds references to, with their counts.
    users: Mutex<Vec<(Arc<UserObject>, u32)>>,
}

/// `cuUserObjectCreate`: a reference-counted object whose destructor runs,
/// on a driver thread, when the last reference (the caller's, a graph's,
/// an executable's) goes. PyTorch ties graph-owned memory to these.
pub struct UserObject {
    magic: Magic,
    refs: std::sync::atomic::AtomicU32,
    ptr: usize,
    destroy: crate::stream::HostFn,
}

impl Handle for UserObject {
    const MAGIC: u32 = 0x05E0_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

/// New references to a graph's user objects (for an executable).
fn retain_users(g: &Graph) -> Vec<(Arc<UserObject>, u32)> {
    let us = g.users.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (u, n) in &us {
        u.refs.fetch_add(*n, std::sync::atomic::Ordering::AcqRel);
    }
    us
}

fn user_release(p: &Process, u: &Arc<UserObject>, count: u32) {
    use std::sync::atomic::Ordering;
    let before = u
        .refs
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
            Some(r.saturating_sub(count))
        })
        .unwrap_or(0);
    if before > 0 && before <= count {
        let _ = p.user_objects.remove(handle_of(u));
        let (f, ptr) = (u.destroy, u.ptr);
        // Asynchronously, as CUDA runs it (the destructor may not call CUDA).
        std::thread::spawn(move || {
            // SAFETY: the caller's destructor with its own pointer, called once.
            unsafe { f(ptr as *mut c_void) }
        });
    }
}

impl Handle for Graph {
    const MAGIC: u32 = 0x96A9_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

/// A node's kind, for comparing topologies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tag {
    Kernel,
    Copy,
    Set,
    Empty,
    Host,
    MemAlloc,
    MemFree,
}

impl NodeKind {
    fn tag(&self) -> Tag {
        match self {
            NodeKind::Kernel { .. } => Tag::Kernel,
            NodeKind::Op(Op::Copy(_)) => Tag::Copy,
            NodeKind::Op(Op::Set(_)) => Tag::Set,
            NodeKind::Empty => Tag::Empty,
            NodeKind::Host { .. } => Tag::Host,
            NodeKind::MemAlloc(_) => Tag::MemAlloc,
            NodeKind::MemFree(_) => Tag::MemFree,
        }
    }
}

/// A graph's topology: each node's kind and its dependencies by index.
type Shape = Vec<(Tag, Vec<usize>)>;

/// Each node's kind and dependencies by index, and the step it runs as.
fn plan(nodes: &[Arc<Node>]) -> (Shape, Vec<Option<Step>>) {
    let index: std::collections::HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (handle_of(n) as usize, i))
        .collect();
    let mut shape = Vec::with_capacity(nodes.len());
    let mut steps = Vec::with_capacity(nodes.len());
    for n in nodes {
        let k = n.kind();
        let mut deps: Vec<usize> = n
            .deps
            .iter()
            .filter_map(|d| index.get(d).copied())
            .collect();
        deps.sort_unstable();
        shape.push((k.tag(), deps));
        steps.push(match &*k {
            NodeKind::Kernel { duration_ns, .. } => Some(Step::Kernel(*duration_ns)),
            NodeKind::Op(op) => Some(Step::Op(*op)),
            NodeKind::Host { f, data } => Some(Step::Host(*f, *data)),
            _ => None,
        });
    }
    (shape, steps)
}

/// One step of an executable graph, in topological order.
#[derive(Clone, Copy)]
enum Step {
    Kernel(u64),
    Op(Op),
    Host(crate::stream::HostFn, usize),
}

pub struct GraphExec {
    magic: Magic,
    id: u64,
    /// Steps by node handle (kernel steps are updated in place).
    steps: Mutex<Vec<(usize, Step)>>,
    /// The topology it was made from: each node's kind and dependencies (by
    /// index), what `cuGraphExecUpdate` compares a new graph with.
    shape: Shape,
    allocs: Vec<Arc<GraphAlloc>>,
    /// Graph memory the graph's own free nodes free.
    frees: Vec<u64>,
    /// References to the graph's user objects, held while it lives (and
    /// until its last launch has finished).
    users: Mutex<Vec<(Arc<UserObject>, u32)>>,
    /// The stream of its last launch.
    last: Mutex<Option<Arc<crate::stream::Stream>>>,
    /// CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH.
    auto_free: bool,
    /// Whether `allocs` are physically backed (mapped and charged), and the
    /// last launch's work.
    backed: Mutex<Option<(Arc<crate::context::Ctx>, simgpu::Seq)>>,
}

// SAFETY: host-function user data is the caller's pointer, only handed back
// to the caller's function, as CUDA does.
unsafe impl Send for GraphExec {}
// SAFETY: as above; all mutable state is behind mutexes.
unsafe impl Sync for GraphExec {}

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
        users: Mutex::new(Vec::new()),
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
        kind: Mutex::new(kind),
        deps: deps.to_vec(),
    });
    g.nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(n.clone());
    Ok(n)
}

/// Releases a graph's nodes and its references to user objects.
pub fn destroy(p: &Process, g: &Graph) {
    for (u, n) in g.users.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        user_release(p, &u, n);
    }
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
        let t = match &*n.kind() {
            NodeKind::Kernel { .. } => graph_node_type::KERNEL,
            NodeKind::Op(Op::Copy(_)) => graph_node_type::MEMCPY,
            NodeKind::Op(Op::Set(_)) => graph_node_type::MEMSET,
            NodeKind::Empty => graph_node_type::EMPTY,
            NodeKind::Host { .. } => graph_node_type::HOST,
            NodeKind::MemAlloc(_) => graph_node_type::MEM_ALLOC,
            NodeKind::MemFree(_) => graph_node_type::MEM_FREE,
        };
        // SAFETY: caller's output pointer.
        unsafe { out(ty, t) }
    }
}

fn kernel_params(node: CUgraphNode) -> Res<CUDA_KERNEL_NODE_PARAMS_v2> {
    let n = process::initialized()?.nodes.get(node)?;
    let g = n.kind();
    let NodeKind::Kernel { params: k, .. } = &*g else {
        return Err(INVALID_VALUE);
    };
    Ok(*k)
}

fn v1_to_v2(k: CUDA_KERNEL_NODE_PARAMS_v1) -> CUDA_KERNEL_NODE_PARAMS_v2 {
    CUDA_KERNEL_NODE_PARAMS_v2 {
        func: k.func,
        gridDimX: k.gridDimX,
        gridDimY: k.gridDimY,
        gridDimZ: k.gridDimZ,
        blockDimX: k.blockDimX,
        blockDimY: k.blockDimY,
        blockDimZ: k.blockDimZ,
        sharedMemBytes: k.sharedMemBytes,
        kernelParams: k.kernelParams,
        extra: k.extra,
        kern: std::ptr::null_mut(),
        ctx: std::ptr::null_mut(),
    }
}

export! {
    fn cuGraphKernelNodeGetParams_v2(node: CUgraphNode, params: *mut CUDA_KERNEL_NODE_PARAMS_v2) {
        let k = kernel_params(node)?;
        // SAFETY: caller's output pointer.
        unsafe { out(params, k) }
    }
}

export! {
    fn cuGraphKernelNodeGetParams(node: CUgraphNode, params: *mut CUDA_KERNEL_NODE_PARAMS_v1) {
        let k = kernel_params(node)?;
        let v1 = CUDA_KERNEL_NODE_PARAMS_v1 {
            func: k.func, gridDimX: k.gridDimX, gridDimY: k.gridDimY, gridDimZ: k.gridDimZ,
            blockDimX: k.blockDimX, blockDimY: k.blockDimY, blockDimZ: k.blockDimZ,
            sharedMemBytes: k.sharedMemBytes, kernelParams: k.kernelParams, extra: k.extra,
        };
        // SAFETY: caller's output pointer.
        unsafe { out(params, v1) }
    }
}

fn set_kernel_params(node: CUgraphNode, k: CUDA_KERNEL_NODE_PARAMS_v2) -> Res {
    let n = process::initialized()?.nodes.get(node)?;
    if !matches!(&*n.kind(), NodeKind::Kernel { .. }) {
        return Err(INVALID_VALUE);
    }
    let kind = kernel_kind(k)?;
    *n.kind() = kind;
    Ok(())
}

export! {
    fn cuGraphKernelNodeSetParams_v2(node: CUgraphNode, params: *const CUDA_KERNEL_NODE_PARAMS_v2) {
        // SAFETY: caller's node parameters.
        set_kernel_params(node, unsafe { read(params)? })
    }
}

export! {
    fn cuGraphKernelNodeSetParams(node: CUgraphNode, params: *const CUDA_KERNEL_NODE_PARAMS_v1) {
        // SAFETY: caller's node parameters.
        set_kernel_params(node, v1_to_v2(unsafe { read(params)? }))
    }
}

/// Updates a kernel node of an executable graph (the graph's own node is
/// unchanged, as in CUDA).
fn exec_set_kernel(exec: CUgraphExec, node: CUgraphNode, k: CUDA_KERNEL_NODE_PARAMS_v2) -> Res {
    let p = process::initialized()?;
    let e = p.execs.get(exec)?;
    let n = p.nodes.get(node)?;
    if !matches!(&*n.kind(), NodeKind::Kernel { .. }) {
        return Err(INVALID_VALUE);
    }
    let NodeKind::Kernel { duration_ns, .. } = kernel_kind(k)? else {
        unreachable!()
    };
    let mut steps = e.steps.lock().unwrap_or_else(|e| e.into_inner());
    let st = steps
        .iter_mut()
        .find(|(h, _)| *h == node as usize)
        .ok_or(INVALID_VALUE)?;
    st.1 = Step::Kernel(duration_ns);
    Ok(())
}

export! {
    fn cuGraphExecKernelNodeSetParams_v2(exec: CUgraphExec, node: CUgraphNode, params: *const CUDA_KERNEL_NODE_PARAMS_v2) {
        // SAFETY: caller's node parameters.
        exec_set_kernel(exec, node, unsafe { read(params)? })
    }
}

export! {
    fn cuGraphExecKernelNodeSetParams(exec: CUgraphExec, node: CUgraphNode, params: *const CUDA_KERNEL_NODE_PARAMS_v1) {
        // SAFETY: caller's node parameters.
        exec_set_kernel(exec, node, v1_to_v2(unsafe { read(params)? }))
    }
}

/// `CUDA_HOST_NODE_PARAMS` (v1; v2 adds a sync mode after these).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostNodeParams {
    pub f: Option<crate::stream::HostFn>,
    pub data: *mut c_void,
}

fn host_kind(h: HostNodeParams) -> Res<NodeKind> {
    Ok(NodeKind::Host {
        f: h.f.ok_or(INVALID_VALUE)?,
        data: h.data as usize,
    })
}

export! {
    fn cuGraphAddHostNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *const HostNodeParams) {
        add(pnode, graph, deps, n, || {
            // SAFETY: caller's node parameters.
            host_kind(unsafe { read(params)? })
        })
    }
}

export! {
    fn cuGraphHostNodeGetParams(node: CUgraphNode, params: *mut HostNodeParams) {
        let n = process::initialized()?.nodes.get(node)?;
        let g = n.kind();
        let NodeKind::Host { f, data } = &*g else { return Err(INVALID_VALUE) };
        // SAFETY: caller's output pointer.
        unsafe { out(params, HostNodeParams { f: Some(*f), data: *data as *mut c_void }) }
    }
}

export! {
    fn cuGraphHostNodeSetParams(node: CUgraphNode, params: *const HostNodeParams) {
        let n = process::initialized()?.nodes.get(node)?;
        // SAFETY: caller's node parameters.
        let k = host_kind(unsafe { read(params)? })?;
        let mut g = n.kind();
        if !matches!(&*g, NodeKind::Host { .. }) {
            return Err(INVALID_VALUE);
        }
        *g = k;
        Ok(())
    }
}

export! {
    fn cuGraphExecHostNodeSetParams(exec: CUgraphExec, node: CUgraphNode, params: *const HostNodeParams) {
        let p = process::initialized()?;
        let e = p.execs.get(exec)?;
        // SAFETY: caller's node parameters.
        let NodeKind::Host { f, data } = host_kind(unsafe { read(params)? })? else { unreachable!() };
        let mut steps = e.steps.lock().unwrap_or_else(|e| e.into_inner());
        let st = steps.iter_mut().find(|(h, s)| *h == node as usize && matches!(s, Step::Host(..))).ok_or(INVALID_VALUE)?;
        st.1 = Step::Host(f, data);
        Ok(())
    }
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS` (v1 and v2 share the layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemAllocNodeParams {
    pub pool_props: cuda_abi::driver_types::CUmemPoolProps,
    pub access_descs: *const cuda_abi::driver_types::CUmemAccessDesc,
    pub access_desc_count: usize,
    pub bytesize: usize,
    pub dptr: CUdeviceptr,
}

/// Makes an allocation node's memory: a fixed, reserved address range.
pub fn graph_alloc(p: &Process, device: i32, size: u64) -> Res<Arc<GraphAlloc>> {
    p.device(device)?;
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let charged = crate::memory::charge_for(size);
    let len = usize::try_from(charged).map_err(|_| CUresult::ERROR_OUT_OF_MEMORY)?;
    let base = crate::memory::reserve(len)?;
    let a = Arc::new(GraphAlloc {
        base,
        size,
        charged,
        device,
        owner: Mutex::new(None),
        live: std::sync::atomic::AtomicBool::new(false),
    });
    let mut m = p.graph_allocs.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= 64 && m.len().is_power_of_two() {
        m.retain(|_, w| w.strong_count() > 0);
    }
    m.insert(a.base, Arc::downgrade(&a));
    Ok(a)
}

/// The allocation node memory at `ptr`, if any.
pub fn graph_alloc_at(p: &Process, ptr: u64) -> Option<Arc<GraphAlloc>> {
    p.graph_allocs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&ptr)
        .and_then(Weak::upgrade)
}

/// Frees graph memory outside its graph (`cuMemFree`, `cuMemFreeAsync`):
/// the allocation ends; its memory stays with the graph's pool.
pub fn free_outside(p: &Process, ptr: u64) -> bool {
    match graph_alloc_at(p, ptr) {
        Some(a) => {
            a.live.store(false, std::sync::atomic::Ordering::Release);
            true
        }
        None => false,
    }
}

/// Whether `ptr` is the address of a live allocation node's memory.
pub fn is_graph_alloc(p: &Process, ptr: u64) -> bool {
    p.graph_allocs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&ptr)
        .is_some_and(|w| w.strong_count() > 0)
}

fn mem_alloc_kind(p: &Process, prm: &mut MemAllocNodeParams) -> Res<NodeKind> {
    let loc = prm.pool_props.location;
    // Pinned device memory (allocType 1) on a device.
    if prm.pool_props.allocType != 1 || loc.type_ != cuda_abi::CU_MEM_LOCATION_TYPE_DEVICE {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller's access descriptors.
    for d in unsafe { slice(prm.access_descs, prm.access_desc_count)? } {
        p.device(d.location.id)?;
    }
    let a = graph_alloc(p, loc.id, prm.bytesize as u64)?;
    prm.dptr = a.base;
    Ok(NodeKind::MemAlloc(a))
}

export! {
    fn cuGraphAddMemAllocNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *mut MemAllocNodeParams) {
        let p = process::initialized()?;
        // SAFETY: caller's node parameters (dptr is written back).
        let mut prm = unsafe { read(params)? };
        add(pnode, graph, deps, n, || mem_alloc_kind(p, &mut prm))?;
        // SAFETY: as above.
        unsafe { out(params, prm) }
    }
}

export! {
    fn cuGraphMemAllocNodeGetParams(node: CUgraphNode, params: *mut MemAllocNodeParams) {
        let n = process::initialized()?.nodes.get(node)?;
        let g = n.kind();
        let NodeKind::MemAlloc(a) = &*g else { return Err(INVALID_VALUE) };
        // SAFETY: an all-zero CUmemPoolProps is a valid value (plain integers and a NULL pointer).
        let mut props: cuda_abi::driver_types::CUmemPoolProps = unsafe { std::mem::zeroed() };
        props.allocType = 1;
        props.location = cuda_abi::CUmemLocation { type_: cuda_abi::CU_MEM_LOCATION_TYPE_DEVICE, id: a.device };
        let prm = MemAllocNodeParams { pool_props: props, access_descs: std::ptr::null(), access_desc_count: 0, bytesize: a.size as usize, dptr: a.base };
        // SAFETY: caller's output pointer.
        unsafe { out(params, prm) }
    }
}

fn mem_free_kind(p: &Process, dptr: u64) -> Res<NodeKind> {
    if !is_graph_alloc(p, dptr) {
        return Err(INVALID_VALUE);
    }
    Ok(NodeKind::MemFree(dptr))
}

export! {
    fn cuGraphAddMemFreeNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, dptr: CUdeviceptr) {
        let p = process::initialized()?;
        add(pnode, graph, deps, n, || mem_free_kind(p, dptr))
    }
}

export! {
    fn cuGraphMemFreeNodeGetParams(node: CUgraphNode, dptr: *mut CUdeviceptr) {
        let n = process::initialized()?.nodes.get(node)?;
        let g = n.kind();
        let NodeKind::MemFree(d) = &*g else { return Err(INVALID_VALUE) };
        // SAFETY: caller's output pointer.
        unsafe { out(dptr, *d) }
    }
}

/// `CUgraphNodeParams`: a type, then a union of every node kind's
/// parameters at offset 16 (232 bytes), then 8 reserved bytes.
#[repr(C)]
pub struct NodeParams {
    ty: u32,
    _reserved0: [i32; 3],
    union: [u64; 29],
    _reserved2: i64,
}

/// The generic form: the kinds this driver models.
fn add_generic(
    pnode: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *mut NodeParams,
) -> Res {
    let p = process::initialized()?;
    if params.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller's parameters (non-NULL); the union is read as the member its type names.
    let (ty, u) = unsafe {
        (
            (*params).ty,
            std::ptr::addr_of_mut!((*params).union).cast::<u8>(),
        )
    };
    // Each arm reads the union member its type names (within its 232 bytes).
    match ty {
        graph_node_type::KERNEL => add(pnode, graph, deps, n, || {
            // SAFETY: the union member this node type names, in the caller's parameters.
            kernel_kind(unsafe { read(u.cast::<CUDA_KERNEL_NODE_PARAMS_v2>())? })
        }),
        graph_node_type::MEMCPY => {
            // CUDA_MEMCPY_NODE_PARAMS: flags, reserved, copyCtx, copyParams.
            // SAFETY: the union member this node type names, in the caller's parameters.
            let ctx = unsafe { read(u.add(8).cast::<CUcontext>())? };
            crate::context::resolve(ctx)?;
            add(pnode, graph, deps, n, || {
                // SAFETY: the union member this node type names, in the caller's parameters.
                Ok(NodeKind::Op(Op::Copy(unsafe {
                    read(u.add(16).cast::<CUDA_MEMCPY3D>())?
                })))
            })
        }
        graph_node_type::MEMSET => {
            // CUDA_MEMSET_NODE_PARAMS_v2: the v1 fields, then the context.
            // SAFETY: the union member this node type names, in the caller's parameters.
            let ctx = unsafe {
                read(
                    u.add(std::mem::size_of::<CUDA_MEMSET_NODE_PARAMS>())
                        .cast::<CUcontext>(),
                )?
            };
            crate::context::resolve(ctx)?;
            add(pnode, graph, deps, n, || {
                // SAFETY: the union member this node type names, in the caller's parameters.
                Ok(NodeKind::Op(Op::Set(unsafe {
                    read(u.cast::<CUDA_MEMSET_NODE_PARAMS>())?
                })))
            })
        }
        graph_node_type::HOST => add(pnode, graph, deps, n, || {
            // SAFETY: the union member this node type names, in the caller's parameters.
            host_kind(unsafe { read(u.cast::<HostNodeParams>())? })
        }),
        graph_node_type::EMPTY => add(pnode, graph, deps, n, || Ok(NodeKind::Empty)),
        graph_node_type::MEM_ALLOC => {
            let pa = u.cast::<MemAllocNodeParams>();
            // SAFETY: the union member this node type names, in the caller's parameters.
            let mut prm = unsafe { read(pa)? };
            add(pnode, graph, deps, n, || mem_alloc_kind(p, &mut prm))?;
            // SAFETY: the union member this node type names, in the caller's parameters.
            unsafe { out(pa, prm) }
        }
        graph_node_type::MEM_FREE => {
            // SAFETY: the union member this node type names, in the caller's parameters.
            let d = unsafe { read(u.cast::<CUdeviceptr>())? };
            add(pnode, graph, deps, n, || mem_free_kind(p, d))
        }
        _ => Err(CUresult::ERROR_NOT_SUPPORTED),
    }
}

export! {
    fn cuGraphAddNode(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, n: usize, params: *mut NodeParams) {
        add_generic(pnode, graph, deps, n, params)
    }
}

export! {
    /// Edge data (ports, edge types) only refines ordering, which a
    /// simulated launch keeps anyway; it must be NULL or describe default edges.
    fn cuGraphAddNode_v2(pnode: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, edges: *const [u8; 8], n: usize, params: *mut NodeParams) {
        // SAFETY: the caller's edge data, one per dependency, when given.
        if unsafe { slice(edges, if edges.is_null() { 0 } else { n })? }.iter().any(|e| e.iter().any(|b| *b != 0)) {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        add_generic(pnode, graph, deps, n, params)
    }
}

fn instantiate(exec: *mut CUgraphExec, graph: CUgraph, flags: u64) -> Res<Arc<GraphExec>> {
    let p = process::initialized()?;
    let g = p.graphs.get(graph)?;
    if exec.is_null() {
        return Err(INVALID_VALUE);
    }
    let nodes = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Nodes only depend on earlier nodes, so insertion order is a topological order.
    let (shape, planned) = plan(&nodes);
    let steps: Vec<(usize, Step)> = nodes
        .iter()
        .zip(planned)
        .filter_map(|(n, st)| st.map(|st| (handle_of(n) as usize, st)))
        .collect();
    let allocs: Vec<Arc<GraphAlloc>> = nodes
        .iter()
        .filter_map(|n| match &*n.kind() {
            NodeKind::MemAlloc(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    let frees: Vec<u64> = nodes
        .iter()
        .filter_map(|n| match &*n.kind() {
            NodeKind::MemFree(d) => Some(*d),
            _ => None,
        })
        .collect();
    let id = p.next_id();
    // One executable at a time for a graph with allocation nodes.
    for a in &allocs {
        let mut o = a.owner.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_some_and(|x| x != id) {
            drop(o);
            release_owner(&allocs, id);
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        *o = Some(id);
    }
    let e = p.execs.insert(GraphExec {
        magic: Magic::new(GraphExec::MAGIC),
        id,
        steps: Mutex::new(steps),
        shape,
        allocs,
        frees,
        users: Mutex::new(retain_users(&g)),
        last: Mutex::new(None),
        auto_free: flags & 1 != 0,
        backed: Mutex::new(None),
    });
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(exec, handle_of(&e))? };
    Ok(e)
}

fn release_owner(allocs: &[Arc<GraphAlloc>], id: u64) {
    for a in allocs {
        let mut o = a.owner.lock().unwrap_or_else(|e| e.into_inner());
        if *o == Some(id) {
            *o = None;
        }
    }
}

/// Maps and charges an executable's graph memory (once, until trimmed).
type Backed = Option<(Arc<crate::context::Ctx>, simgpu::Seq)>;

/// Backs (maps and charges) an executable's graph memory unless it is;
/// returns whether this call did. The caller holds the `backed` guard.
fn back(p: &Process, e: &GraphExec, b: &mut Backed, ctx: &Arc<crate::context::Ctx>) -> Res<bool> {
    if b.is_some() || e.allocs.is_empty() {
        if let Some((c, _)) = b.as_mut() {
            *c = ctx.clone();
        }
        return Ok(false);
    }
    for a in &e.allocs {
        p.device(a.device)?;
    }
    // Memory a destroyed executable of the same graph left in the pool is
    // reused as it is (already mapped and charged), as CUDA's pool reuses it.
    let mut adopted: Vec<*const GraphAlloc> = Vec::new();
    {
        let mut res = p.graph_residue.lock().unwrap_or_else(|e| e.into_inner());
        for r in res.iter_mut() {
            r.allocs.retain(|x| {
                let mine = e.allocs.iter().any(|a| Arc::ptr_eq(a, x));
                if mine {
                    adopted.push(Arc::as_ptr(x));
                }
                !mine
            });
        }
        res.retain(|r| !r.allocs.is_empty());
    }
    let mut done: Vec<&Arc<GraphAlloc>> = Vec::new();
    let fail = |done: &[&Arc<GraphAlloc>]| {
        for a in done {
            unback_one(p, a);
        }
    };
    for a in e
        .allocs
        .iter()
        .filter(|a| !adopted.contains(&Arc::as_ptr(a)))
    {
        let dev = p.device(a.device)?;
        if dev.sim.mem_charge(a.charged).is_err() {
            fail(&done);
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: the node's own reserved range.
        if unsafe { crate::memory::map_fixed(a.base, a.charged as usize) }.is_err() {
            dev.sim.mem_uncharge(a.charged);
            fail(&done);
            return Err(CUresult::ERROR_OUT_OF_MEMORY);
        }
        p.mem.insert(crate::memory::Alloc {
            base: a.base,
            size: a.size,
            mapped: 0,
            charged: 0,
            device: a.device,
            ctx: 0,
            ctx_id: 0,
            kind: crate::memory::Kind::Graph,
        });
        p.note_graph_mem(a.device, a.charged as i64);
        done.push(a);
    }
    *b = Some((ctx.clone(), 0));
    Ok(true)
}

fn unback_one(p: &Process, a: &GraphAlloc) {
    p.mem.remove(a.base);
    // SAFETY: the node's own mapped range.
    let _ = unsafe { crate::memory::to_reservation(a.base, a.charged as usize) };
    if let Ok(d) = p.device(a.device) {
        d.sim.mem_uncharge(a.charged);
    }
    p.note_graph_mem(a.device, -(a.charged as i64));
}

/// Returns an executable's graph memory to the ledger, unless its last
/// launch may still be running.
fn unback(p: &Process, e: &GraphExec) -> bool {
    let mut b = e.backed.lock().unwrap_or_else(|e| e.into_inner());
    let Some((ctx, seq)) = b.as_ref() else {
        return false;
    };
    if !ctx.sim().map(|s| s.is_complete(*seq)).unwrap_or(true) {
        return false;
    }
    // Allocations not freed yet stay valid, as in CUDA.
    if e.allocs
        .iter()
        .any(|a| a.live.load(std::sync::atomic::Ordering::Acquire))
    {
        return false;
    }
    for a in &e.allocs {
        unback_one(p, a);
    }
    *b = None;
    true
}

/// Graph memory of destroyed executables, kept by the device's graph pool
/// until a trim (as CUDA keeps it), with the last launch that used it.
pub struct Residue {
    allocs: Vec<Arc<GraphAlloc>>,
    ctx: Arc<crate::context::Ctx>,
    seq: simgpu::Seq,
}

/// `cuDeviceGraphMemTrim`: the device's graph memory not in use, of live
/// executables and of destroyed ones, goes back.
pub fn trim(p: &Process, device: i32) {
    for e in p.execs.all() {
        if e.allocs.iter().any(|a| a.device == device) {
            unback(p, &e);
        }
    }
    let mut res = p.graph_residue.lock().unwrap_or_else(|e| e.into_inner());
    res.retain(|r| {
        let on = r.allocs.iter().any(|a| a.device == device);
        let idle = r.ctx.sim().map(|s| s.is_complete(r.seq)).unwrap_or(true);
        let live = r
            .allocs
            .iter()
            .any(|a| a.live.load(std::sync::atomic::Ordering::Acquire));
        if on && idle && !live {
            for a in &r.allocs {
                unback_one(p, a);
            }
            false
        } else {
            true
        }
    });
}

export! {
    fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: u64) {
        if flags & !0xf != 0 {
            return Err(INVALID_VALUE);
        }
        instantiate(exec, graph, flags).map(|_| ())
    }
}

fn instantiate_logged(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    err_node: *mut CUgraphNode,
    log: *mut c_char,
    len: usize,
) -> Res {
    // SAFETY: optional outputs: no error node; an empty log.
    unsafe {
        out_opt(err_node, std::ptr::null_mut());
        if !log.is_null() && len > 0 {
            *log = 0;
        }
    }
    instantiate(exec, graph, 0).map(|_| ())
}

export! {
    /// The CUDA 10 form, with an error node and a log buffer.
    fn cuGraphInstantiate(exec: *mut CUgraphExec, graph: CUgraph, err_node: *mut CUgraphNode, log: *mut c_char, len: usize) {
        instantiate_logged(exec, graph, err_node, log, len)
    }
}

export! {
    fn cuGraphInstantiate_v2(exec: *mut CUgraphExec, graph: CUgraph, err_node: *mut CUgraphNode, log: *mut c_char, len: usize) {
        instantiate_logged(exec, graph, err_node, log, len)
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
        let upload = if prm.flags & 2 != 0 { Some(stream::resolve(prm.hUploadStream, ds)?) } else { None };
        let mut r = instantiate(exec, graph, prm.flags);
        if let (Ok(e), Some(s)) = (&r, &upload) {
            let mut b = e.backed.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(x) = back(process::get(), e, &mut b, &s.ctx) {
                drop(b);
                let _ = destroy_exec(process::get(), handle_of(e));
                // SAFETY: the caller's output pointer (non-NULL: instantiate wrote it).
                unsafe { out(exec, std::ptr::null_mut())? };
                r = Err(x);
            }
        }
        prm.result_out = if r.is_ok() { 0 } else { 1 };
        prm.hErrNode_out = std::ptr::null_mut();
        // SAFETY: caller's parameters, written back with the result.
        unsafe { out(params, prm)? };
        r.map(|_| ())
    }
}

export_pt! {
    /// Uploading maps and charges the graph's memory; there is nothing
    /// else to upload to a simulated device.
    fn cuGraphUpload / cuGraphUpload_ptsz(exec: CUgraphExec, h: CUstream) |ds| {
        let p = process::initialized()?;
        let e = p.execs.get(exec)?;
        let s = stream::resolve(h, ds)?;
        let mut b = e.backed.lock().unwrap_or_else(|e| e.into_inner());
        back(p, &e, &mut b, &s.ctx).map(|_| ())
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
        use std::sync::atomic::Ordering;
        // Held for the whole launch: a trim cannot take the memory from
        // under the launch's copies.
        let mut b = e.backed.lock().unwrap_or_else(|e| e.into_inner());
        // Allocations of the previous launch not freed yet: CUDA refuses.
        if !e.auto_free && e.allocs.iter().any(|a| a.live.load(Ordering::Acquire)) {
            return Err(INVALID_VALUE);
        }
        let newly = back(p, &e, &mut b, &s.ctx)?;
        let run = || -> Res {
            let steps = e.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // Every copy and memset is validated before any runs.
            let prepared = steps
                .iter()
                .filter_map(|(_, st)| match st {
                    Step::Op(op) => Some(copy::prepare(p, op)),
                    _ => None,
                })
                .collect::<Res<Vec<_>>>()?;
            let mut prepared = prepared.iter();
            let mut pending = 0u64;
            let mut ran_kernel = false;
            for (_, st) in &steps {
                match *st {
                    Step::Kernel(d) => {
                        pending = pending.saturating_add(d);
                        ran_kernel = true;
                    }
                    // Data effects happen when issued, as all of this driver's do.
                    Step::Op(_) => {
                        if let Some(op) = prepared.next() {
                            op.run();
                        }
                    }
                    Step::Host(f, data) => {
                        if pending > 0 {
                            s.submit(simgpu::Work { kind: simgpu::WorkKind::Graph, duration_ns: pending, tag: exec as u64 })?;
                            pending = 0;
                        }
                        s.launch_host(Box::new(move || {
                            // SAFETY: the caller's host function with its own user data, as CUDA calls it.
                            unsafe { f(data as *mut c_void) }
                        }))?;
                    }
                }
            }
            if pending > 0 || !ran_kernel {
                s.submit(simgpu::Work { kind: simgpu::WorkKind::Graph, duration_ns: pending, tag: exec as u64 })?;
            }
            Ok(())
        };
        if let Err(x) = run() {
            // Nothing ran: memory this call backed goes back.
            if newly {
                for a in &e.allocs {
                    unback_one(p, a);
                }
                *b = None;
            }
            return Err(x);
        }
        for a in &e.allocs {
            a.live.store(true, Ordering::Release);
        }
        *e.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        for d in &e.frees {
            free_outside(p, *d);
        }
        if let Some((_, seq)) = b.as_mut() {
            *seq = s.last();
        }
        Ok(())
    }
}

/// Destroying an executable does not wait for its launches; its backed
/// memory stays with the device's graph pool until a trim.
fn destroy_exec(p: &Process, exec: CUgraphExec) -> Res {
    let e = p.execs.remove(exec)?;
    if let Some((ctx, seq)) = e.backed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        p.graph_residue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Residue {
                allocs: e.allocs.clone(),
                ctx,
                seq,
            });
    }
    release_owner(&e.allocs, e.id);
    // An executable's user objects are released once its launches are done.
    let users = std::mem::take(&mut *e.users.lock().unwrap_or_else(|e| e.into_inner()));
    let release = move || {
        for (u, n) in &users {
            user_release(process::get(), u, *n);
        }
    };
    // (Not through a stream being captured again: that would end the capture.)
    match e
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .filter(|s| !s.capturing())
    {
        Some(s) => {
            let release = std::sync::Arc::new(Mutex::new(Some(release)));
            let r2 = release.clone();
            if s.launch_host(Box::new(move || {
                if let Some(f) = r2.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    f();
                }
            }))
            .is_err()
            {
                if let Some(f) = release.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    f();
                }
            }
        }
        None => release(),
    }
    Ok(())
}

export! {
    fn cuGraphExecDestroy(exec: CUgraphExec) {
        destroy_exec(process::initialized()?, exec)
    }
}

export! {
    fn cuDeviceGraphMemTrim(device: i32) {
        let p = process::initialized()?;
        p.device(device)?;
        trim(p, device);
        Ok(())
    }
}

export! {
    /// `CUgraphMem_attribute`: USED_MEM_CURRENT, USED_MEM_HIGH,
    /// RESERVED_MEM_CURRENT, RESERVED_MEM_HIGH (used and reserved are the
    /// same here: graph memory is reserved exactly as it is backed).
    fn cuDeviceGetGraphMemAttribute(device: i32, attr: u32, value: *mut c_void) {
        let p = process::initialized()?;
        p.device(device)?;
        let (cur, high) = p.graph_mem(device);
        let v = match attr {
            0 | 2 => cur,
            1 | 3 => high,
            _ => return Err(INVALID_VALUE),
        };
        // SAFETY: the caller's cuuint64_t.
        unsafe { out(value.cast::<u64>(), v) }
    }
}

export! {
    /// Only the high watermarks can be set, and only to zero (a reset).
    fn cuDeviceSetGraphMemAttribute(device: i32, attr: u32, value: *mut c_void) {
        let p = process::initialized()?;
        p.device(device)?;
        // SAFETY: the caller's cuuint64_t.
        let v = unsafe { read(value.cast::<u64>())? };
        if !matches!(attr, 1 | 3) || v != 0 {
            return Err(INVALID_VALUE);
        }
        p.reset_graph_mem_high(device);
        Ok(())
    }
}

/// `CUgraphExecUpdateResult`.
mod update_result {
    pub const SUCCESS: u32 = 0;
    pub const TOPOLOGY_CHANGED: u32 = 2;
    pub const NODE_TYPE_CHANGED: u32 = 3;
    pub const NOT_SUPPORTED: u32 = 6;
}
/// CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE.
const UPDATE_FAILURE: CUresult = CUresult(910);

/// Updates an executable from a graph of the same topology: each node's
/// parameters (kernel durations, copies, memsets, host functions) are
/// taken from the graph's node in the same position. Returns the result
/// code and the index of the offending node, if any.
fn exec_update(exec: CUgraphExec, graph: CUgraph) -> Res<(u32, Option<usize>, Vec<Arc<Node>>)> {
    let p = process::initialized()?;
    let e = p.execs.get(exec)?;
    let g = p.graphs.get(graph)?;
    let nodes = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (shape, planned) = plan(&nodes);
    if shape.len() != e.shape.len() {
        return Ok((update_result::TOPOLOGY_CHANGED, None, nodes));
    }
    for (i, ((t, d), (t0, d0))) in shape.iter().zip(&e.shape).enumerate() {
        if matches!(t, Tag::MemAlloc | Tag::MemFree) || matches!(t0, Tag::MemAlloc | Tag::MemFree) {
            // Graphs with memory nodes cannot be updated, as in CUDA.
            return Ok((update_result::NOT_SUPPORTED, Some(i), nodes));
        }
        if t != t0 {
            return Ok((update_result::NODE_TYPE_CHANGED, Some(i), nodes));
        }
        if d != d0 {
            return Ok((update_result::TOPOLOGY_CHANGED, Some(i), nodes));
        }
    }
    let mut steps = e.steps.lock().unwrap_or_else(|e| e.into_inner());
    let mut fresh = planned.into_iter().flatten();
    for st in steps.iter_mut() {
        if let Some(n) = fresh.next() {
            st.1 = n;
        }
    }
    drop(steps);
    // The executable now holds the new graph's user objects instead.
    let old = std::mem::replace(
        &mut *e.users.lock().unwrap_or_else(|e| e.into_inner()),
        retain_users(&g),
    );
    for (u, n) in &old {
        user_release(p, u, *n);
    }
    Ok((update_result::SUCCESS, None, nodes))
}

export! {
    /// The CUDA 10.2 form: the offending node and the result code.
    fn cuGraphExecUpdate(exec: CUgraphExec, graph: CUgraph, err_node: *mut CUgraphNode, result: *mut u32) {
        let (r, bad, nodes) = exec_update(exec, graph)?;
        let n = bad.and_then(|i| nodes.get(i)).map_or(std::ptr::null_mut(), handle_of);
        // SAFETY: the caller's output pointers.
        unsafe {
            out(err_node, n)?;
            out(result, r)?;
        }
        if r == update_result::SUCCESS { Ok(()) } else { Err(UPDATE_FAILURE) }
    }
}

/// `CUgraphExecUpdateResultInfo`.
#[repr(C)]
pub struct UpdateResultInfo {
    result: u32,
    error_node: CUgraphNode,
    error_from_node: CUgraphNode,
}

export! {
    fn cuGraphExecUpdate_v2(exec: CUgraphExec, graph: CUgraph, info: *mut UpdateResultInfo) {
        let (r, bad, nodes) = exec_update(exec, graph)?;
        let n = bad.and_then(|i| nodes.get(i)).map_or(std::ptr::null_mut(), handle_of);
        // SAFETY: the caller's output struct.
        unsafe { out(info, UpdateResultInfo { result: r, error_node: n, error_from_node: std::ptr::null_mut() })? };
        if r == update_result::SUCCESS { Ok(()) } else { Err(UPDATE_FAILURE) }
    }
}

fn node_list(
    node: CUgraphNode,
    dependents: bool,
    out_nodes: *mut CUgraphNode,
    count: *mut usize,
) -> Res {
    let p = process::initialized()?;
    let n = p.nodes.get(node)?;
    let g = p
        .graphs
        .all()
        .into_iter()
        .find(|g| g.id == n.graph)
        .ok_or(INVALID_VALUE)?;
    let nodes = g.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let v: Vec<Arc<Node>> = if dependents {
        nodes
            .iter()
            .filter(|m| m.deps.contains(&(node as usize)))
            .cloned()
            .collect()
    } else {
        nodes
            .iter()
            .filter(|m| n.deps.contains(&(handle_of(m) as usize)))
            .cloned()
            .collect()
    };
    list(&v, out_nodes, count)
}

/// Writes zeroed (default) edge data for `count` entries when asked.
///
/// # Safety
/// `edges` is NULL or holds `*count` (after the call) 8-byte records.
unsafe fn zero_edges(edges: *mut [u8; 8], out_nodes: *mut CUgraphNode, count: *mut usize) {
    if edges.is_null() || out_nodes.is_null() || count.is_null() {
        return;
    }
    // SAFETY: per the function contract.
    unsafe {
        for i in 0..*count {
            *edges.add(i) = [0; 8];
        }
    }
}

export! {
    fn cuGraphNodeGetDependencies(node: CUgraphNode, deps: *mut CUgraphNode, count: *mut usize) {
        node_list(node, false, deps, count)
    }
}

export! {
    fn cuGraphNodeGetDependencies_v2(node: CUgraphNode, deps: *mut CUgraphNode, edges: *mut [u8; 8], count: *mut usize) {
        node_list(node, false, deps, count)?;
        // SAFETY: the caller's edge array, as large as its node array.
        unsafe { zero_edges(edges, deps, count) };
        Ok(())
    }
}

export! {
    fn cuGraphNodeGetDependentNodes(node: CUgraphNode, nodes: *mut CUgraphNode, count: *mut usize) {
        node_list(node, true, nodes, count)
    }
}

export! {
    fn cuGraphNodeGetDependentNodes_v2(node: CUgraphNode, nodes: *mut CUgraphNode, edges: *mut [u8; 8], count: *mut usize) {
        node_list(node, true, nodes, count)?;
        // SAFETY: the caller's edge array, as large as its node array.
        unsafe { zero_edges(edges, nodes, count) };
        Ok(())
    }
}

export! {
    /// CU_USER_OBJECT_NO_DESTRUCTOR_SYNC (1) is required, as in CUDA.
    fn cuUserObjectCreate(obj: *mut *mut c_void, ptr: *mut c_void, destroy: Option<crate::stream::HostFn>, refs: u32, flags: u32) {
        let p = process::initialized()?;
        let destroy = destroy.ok_or(INVALID_VALUE)?;
        if obj.is_null() || refs == 0 || flags != 1 {
            return Err(INVALID_VALUE);
        }
        let u = p.user_objects.insert(UserObject {
            magic: Magic::new(UserObject::MAGIC),
            refs: std::sync::atomic::AtomicU32::new(refs),
            ptr: ptr as usize,
            destroy,
        });
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(obj, handle_of(&u)) }
    }
}

export! {
    fn cuUserObjectRetain(obj: *mut c_void, count: u32) {
        let u = process::initialized()?.user_objects.get(obj)?;
        if count == 0 {
            return Err(INVALID_VALUE);
        }
        u.refs.fetch_add(count, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }
}

export! {
    fn cuUserObjectRelease(obj: *mut c_void, count: u32) {
        let p = process::initialized()?;
        let u = p.user_objects.get(obj)?;
        if count == 0 {
            return Err(INVALID_VALUE);
        }
        user_release(p, &u, count);
        Ok(())
    }
}

export! {
    /// CU_GRAPH_USER_OBJECT_MOVE (1) moves the caller's references.
    fn cuGraphRetainUserObject(graph: CUgraph, obj: *mut c_void, count: u32, flags: u32) {
        let p = process::initialized()?;
        let g = p.graphs.get(graph)?;
        let u = p.user_objects.get(obj)?;
        if count == 0 || flags > 1 {
            return Err(INVALID_VALUE);
        }
        if flags == 0 {
            u.refs.fetch_add(count, std::sync::atomic::Ordering::AcqRel);
        }
        let mut us = g.users.lock().unwrap_or_else(|e| e.into_inner());
        match us.iter_mut().find(|(x, _)| Arc::ptr_eq(x, &u)) {
            Some(e) => e.1 += count,
            None => us.push((u, count)),
        }
        Ok(())
    }
}

export! {
    fn cuGraphReleaseUserObject(graph: CUgraph, obj: *mut c_void, count: u32) {
        let p = process::initialized()?;
        let g = p.graphs.get(graph)?;
        let u = p.user_objects.get(obj)?;
        let mut us = g.users.lock().unwrap_or_else(|e| e.into_inner());
        let i = us.iter().position(|(x, _)| Arc::ptr_eq(x, &u)).ok_or(INVALID_VALUE)?;
        if count == 0 || us[i].1 < count {
            return Err(INVALID_VALUE);
        }
        us[i].1 -= count;
        if us[i].1 == 0 {
            us.remove(i);
        }
        drop(us);
        user_release(p, &u, count);
        Ok(())
    }
}

//! Contexts: creation/destruction, the per-thread current-context stack,
//! flags, limits, cache config, synchronization, and the context-local
//! storage the runtime keeps through its private interface.

use crate::entry::{out, out_opt, Res, INVALID_VALUE};
use crate::process::{self, handle_of, Handle, Magic, Process};
use crate::stream::Stream;
use cuda_abi::{CUcontext, CUdevice, CUresult};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, RwLock};

pub const INVALID_CONTEXT: CUresult = CUresult::ERROR_INVALID_CONTEXT;

/// The driver error for a failed simgpu context operation.
pub fn sim_err(e: simgpu::SimError) -> CUresult {
    match e {
        simgpu::SimError::Device(err) => {
            crate::config::log(format_args!("simulated device lost: {err}"));
            CUresult(46) // CUDA_ERROR_DEVICE_UNAVAILABLE
        }
        simgpu::SimError::NotOwner | simgpu::SimError::Gone => INVALID_CONTEXT,
        simgpu::SimError::Lost => CUresult::ERROR_LAUNCH_FAILED,
        simgpu::SimError::InvalidSeq => CUresult::ERROR_INVALID_VALUE,
        simgpu::SimError::BadEvent => CUresult::ERROR_INVALID_HANDLE,
    }
}

/// A destructor the runtime registers with a context-local value.
pub type ClsDtor = unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void);

struct ClsEntry {
    key: usize,
    value: usize,
    dtor: Option<ClsDtor>,
}

/// A job for the context's host-function thread.
pub struct HostJob {
    pub stream: Arc<Stream>,
    pub seq: simgpu::Seq,
    pub call: Box<dyn FnOnce() + Send>,
}

pub struct Ctx {
    magic: Magic,
    pub id: u64,
    pub device: i32,
    pub primary: bool,
    flags: AtomicU32,
    cache_config: AtomicU32,
    limits: Mutex<[usize; LIMITS]>,
    sim: OnceLock<simgpu::Context>,
    sim_init: Mutex<()>,
    /// True once the context's memory has been swept by its destroy. Every
    /// allocation in the context holds it shared from its check to its
    /// record, the sweep exclusively: an allocation racing with a destroy is
    /// either swept with the others or refused, never left behind.
    pub memory_gone: RwLock<bool>,
    legacy: Mutex<Option<Arc<Stream>>>,
    cls: Mutex<Vec<ClsEntry>>,
    host_tx: Mutex<Option<mpsc::Sender<HostJob>>>,
    /// Contexts (ids) whose memory this one may access (peer access).
    peers: Mutex<std::collections::HashSet<u64>>,
}

impl Handle for Ctx {
    const MAGIC: u32 = 0xC7C7_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl Ctx {
    pub fn alive(&self) -> bool {
        self.magic.is(Self::MAGIC)
    }
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }
    pub fn set_flags(&self, f: u32) {
        self.flags.store(f, Ordering::Relaxed)
    }

    /// The simgpu execution context if it was ever claimed.
    pub fn sim_created(&self) -> Option<&simgpu::Context> {
        self.sim.get()
    }

    /// The simgpu execution context, claimed on first use.
    pub fn sim(&self) -> Res<&simgpu::Context> {
        if let Some(c) = self.sim.get() {
            return Ok(c);
        }
        let _g = self.sim_init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = self.sim.get() {
            return Ok(c);
        }
        let p = process::initialized()?;
        let c = p.device(self.device)?.sim.create_context().map_err(|e| {
            crate::config::log(format_args!(
                "cannot create a simulated context on device {}: {e}",
                self.device
            ));
            CUresult::ERROR_OUT_OF_MEMORY
        })?;
        Ok(self.sim.get_or_init(|| c))
    }

    /// The context's legacy default stream.
    pub fn legacy_stream(self: &Arc<Self>) -> Arc<Stream> {
        let mut g = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(|| {
            Arc::new(Stream::new_default(
                self.clone(),
                crate::stream::Kind::Legacy,
            ))
        })
        .clone()
    }

    /// Waits for all work the context submitted, host functions included.
    pub fn synchronize(&self) -> Res {
        if let Some(sim) = self.sim.get() {
            let last = sim.last_submitted();
            if last > 0 {
                sim.try_wait(last).map_err(sim_err)?;
            }
        }
        let p = process::get();
        for s in p.streams.all().iter().filter(|s| s.ctx.id == self.id) {
            s.wait_host_functions();
        }
        if let Some(s) = self
            .legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            s.wait_host_functions();
        }
        Ok(())
    }

    /// Queues a host function to run on the context's host thread once `seq` completes.
    pub fn queue_host(self: &Arc<Self>, job: HostJob) -> Res {
        let mut g = self.host_tx.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let (tx, rx) = mpsc::channel::<HostJob>();
            let ctx = self.clone();
            std::thread::Builder::new()
                .name(format!("simcuda-host-{}", self.id))
                .spawn(move || host_thread(ctx, rx))
                .map_err(|_| CUresult::ERROR_OUT_OF_MEMORY)?;
            *g = Some(tx);
        }
        g.as_ref()
            .expect("just set")
            .send(job)
            .map_err(|_| INVALID_CONTEXT)
    }

    /// `CUlimit` values up to CU_LIMIT_PER_BLOCK_MEMORY_SIZE.
    pub fn limit(&self, l: u32) -> Res<usize> {
        let i = usize::try_from(l)
            .ok()
            .filter(|i| *i < LIMITS)
            .ok_or(CUresult(215))?;
        Ok(self.limits.lock().unwrap_or_else(|e| e.into_inner())[i])
    }
}

/// How many `CUlimit`s there are.
const LIMITS: usize = 11;

fn host_thread(ctx: Arc<Ctx>, rx: mpsc::Receiver<HostJob>) {
    while let Ok(job) = rx.recv() {
        if let Ok(sim) = ctx.sim() {
            if job.seq > 0 {
                let _ = sim.try_wait(job.seq);
            }
        }
        (job.call)();
        job.stream.host_function_done();
    }
}

/// Creates and registers a context (not made current).
pub fn create(p: &Process, device: i32, flags: u32, primary: bool) -> Arc<Ctx> {
    p.contexts.insert(Ctx {
        magic: Magic::new(Ctx::MAGIC),
        id: p.next_id(),
        device,
        primary,
        flags: AtomicU32::new(flags),
        cache_config: AtomicU32::new(0),
        // stack, printf fifo, malloc heap, runtime sync depth, pending launches, L2 fetch, persisting L2
        // .. PERSISTING_L2, then SHMEM_SIZE (what a kernel may use: the
        // opt-in maximum outside a CIG context), CIG_ENABLED (no),
        // CIG_SHMEM_FALLBACK_ENABLED (yes), PER_BLOCK_MEMORY_SIZE.
        limits: Mutex::new([1024, 1 << 20, 8 << 20, 2, 2048, 32, 0, 232_448, 0, 1, 0]),
        sim: OnceLock::new(),
        sim_init: Mutex::new(()),
        memory_gone: RwLock::new(false),
        legacy: Mutex::new(None),
        cls: Mutex::new(Vec::new()),
        host_tx: Mutex::new(None),
        peers: Mutex::new(std::collections::HashSet::new()),
    })
}

/// Destroys a context: waits for its work, runs context-local destructors,
/// frees everything it owns (device memory returns to the ledger).
pub fn destroy(p: &Process, c: &Arc<Ctx>) {
    let _ = c.synchronize();
    let h = handle_of(c);
    let entries = std::mem::take(&mut *c.cls.lock().unwrap_or_else(|e| e.into_inner()));
    for e in entries {
        if let Some(d) = e.dtor {
            // SAFETY: a destructor the runtime registered for this context and key, called once.
            unsafe { d(h, e.key as *mut c_void, e.value as *mut c_void) };
        }
    }
    {
        let mut gone = c.memory_gone.write().unwrap_or_else(|e| e.into_inner());
        *gone = true;
        crate::memory::free_context(p, c);
        crate::array::free_context(p, c);
    }
    for s in p.streams.all().into_iter().filter(|s| s.ctx.id == c.id) {
        let _ = p.streams.remove(handle_of(&s));
    }
    for e in p.events.all().into_iter().filter(|e| e.ctx.id == c.id) {
        let _ = p.events.remove(handle_of(&e));
    }
    *c.legacy.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *c.host_tx.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let _ = p.contexts.remove(h);
    remove_from_stack(c.id);
}

// ------------------------------------------------------------ current-context stack

thread_local! {
    static STACK: RefCell<(u64, Vec<Arc<Ctx>>)> = const { RefCell::new((0, Vec::new())) };
}

/// Runs `f` on the calling thread's context stack. `CUDA_ERROR_DEINITIALIZED`
/// when the thread's storage is already gone (calls from exit handlers).
fn with_stack<R>(f: impl FnOnce(&mut Vec<Arc<Ctx>>) -> R) -> Res<R> {
    let gen = process::get().generation;
    STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.0 != gen {
                // State of an abandoned (pre-fork) process: forget it, never drop it.
                std::mem::forget(std::mem::take(&mut s.1));
                s.0 = gen;
            }
            f(&mut s.1)
        })
        .map_err(|_| CUresult::ERROR_DEINITIALIZED)
}

fn remove_from_stack(id: u64) {
    let _ = with_stack(|s| s.retain(|c| c.id != id));
}

/// The calling thread's current context, or `CUDA_ERROR_INVALID_CONTEXT`.
pub fn current() -> Res<Arc<Ctx>> {
    process::initialized()?;
    let c = with_stack(|s| s.last().cloned())?.ok_or(INVALID_CONTEXT)?;
    if !c.alive() {
        return Err(INVALID_CONTEXT);
    }
    Ok(c)
}

/// A context argument: NULL means the current one.
pub fn resolve(h: CUcontext) -> Res<Arc<Ctx>> {
    if h.is_null() {
        return current();
    }
    process::initialized()?.contexts.get_or(h, INVALID_CONTEXT)
}

// ------------------------------------------------------------ context-local storage (private interface)

pub fn cls_put(ctx: CUcontext, key: *mut c_void, value: *mut c_void, dtor: Option<ClsDtor>) -> Res {
    let c = resolve(ctx)?;
    let mut g = c.cls.lock().unwrap_or_else(|e| e.into_inner());
    g.retain(|e| e.key != key as usize);
    g.push(ClsEntry {
        key: key as usize,
        value: value as usize,
        dtor,
    });
    Ok(())
}

pub fn cls_delete(ctx: CUcontext, key: *mut c_void) -> Res {
    let c = resolve(ctx)?;
    c.cls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|e| e.key != key as usize);
    Ok(())
}

pub fn cls_get(ctx: CUcontext, key: *mut c_void) -> Res<*mut c_void> {
    let c = resolve(ctx)?;
    let g = c.cls.lock().unwrap_or_else(|e| e.into_inner());
    g.iter()
        .find(|e| e.key == key as usize)
        .map(|e| e.value as *mut c_void)
        .ok_or(CUresult::ERROR_INVALID_HANDLE)
}

// ------------------------------------------------------------ entry points

fn create_entry(pctx: *mut CUcontext, flags: u32, dev: CUdevice) -> Res {
    let p = process::initialized()?;
    p.device(dev)?;
    if pctx.is_null() || flags & !0xff != 0 {
        return Err(INVALID_VALUE);
    }
    let c = create(p, dev, flags, false);
    with_stack(|s| s.push(c.clone()))?;
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(pctx, handle_of(&c)) }
}

export! {
    fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: u32, dev: CUdevice) { create_entry(pctx, flags, dev) }
}

export! {
    /// CUDA 11.4 form with execution-affinity parameters (none supported).
    fn cuCtxCreate_v3(pctx: *mut CUcontext, params: *mut c_void, num_params: i32, flags: u32, dev: CUdevice) {
        if num_params > 0 || (!params.is_null() && num_params != 0) {
            return Err(CUresult::ERROR_NOT_SUPPORTED);
        }
        create_entry(pctx, flags, dev)
    }
}

/// `CUctxCreateParams`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CtxCreateParams {
    exec_affinity: *mut c_void,
    num_exec_affinity: i32,
    cig: *mut c_void,
}

export! {
    /// CUDA 12.5 form; execution affinity and CIG parameters are not supported.
    fn cuCtxCreate_v4(pctx: *mut CUcontext, params: *mut c_void, flags: u32, dev: CUdevice) {
        if !params.is_null() {
            // SAFETY: non-NULL pointer to the caller's CUctxCreateParams.
            let prm = unsafe { crate::entry::read(params.cast::<CtxCreateParams>())? };
            if prm.num_exec_affinity != 0 || !prm.cig.is_null() {
                return Err(CUresult::ERROR_NOT_SUPPORTED);
            }
        }
        create_entry(pctx, flags, dev)
    }
}

export! {
    fn cuCtxDestroy_v2(ctx: CUcontext) {
        let p = process::initialized()?;
        let c = p.contexts.get_or(ctx, INVALID_CONTEXT)?;
        if c.primary {
            return Err(INVALID_CONTEXT);
        }
        destroy(p, &c);
        Ok(())
    }
}

export! {
    fn cuCtxSetCurrent(ctx: CUcontext) {
        let p = process::initialized()?;
        if ctx.is_null() {
            with_stack(|s| s.pop())?;
            return Ok(());
        }
        let c = p.contexts.get_or(ctx, INVALID_CONTEXT)?;
        with_stack(|s| {
            s.pop();
            s.push(c);
        })?;
        Ok(())
    }
}

export! {
    fn cuCtxGetCurrent(pctx: *mut CUcontext) {
        process::initialized()?;
        let c = with_stack(|s| s.last().filter(|c| c.alive()).map(handle_of))?.unwrap_or(std::ptr::null_mut());
        // SAFETY: caller's output pointer.
        unsafe { out(pctx, c) }
    }
}

fn push(ctx: CUcontext) -> Res {
    let p = process::initialized()?;
    let c = p.contexts.get_or(ctx, INVALID_CONTEXT)?;
    with_stack(|s| s.push(c))
}

fn pop(pctx: *mut CUcontext) -> Res {
    process::initialized()?;
    let c = with_stack(|s| s.pop())?.ok_or(INVALID_CONTEXT)?;
    // SAFETY: optional output pointer.
    unsafe { out_opt(pctx, handle_of(&c)) };
    Ok(())
}

export! {
    fn cuCtxPushCurrent_v2(ctx: CUcontext) { push(ctx) }
}

export! {
    /// The CUDA 2.0 export: the same as `cuCtxPushCurrent_v2`.
    fn cuCtxPushCurrent(ctx: CUcontext) { push(ctx) }
}

export! {
    /// The CUDA 2.0 export: the same as `cuCtxPopCurrent_v2`.
    fn cuCtxPopCurrent(pctx: *mut CUcontext) { pop(pctx) }
}

export! {
    fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) { pop(pctx) }
}

export! {
    fn cuCtxGetDevice(dev: *mut CUdevice) {
        let c = current()?;
        // SAFETY: caller's output pointer.
        unsafe { out(dev, c.device) }
    }
}

export! {
    fn cuCtxGetDevice_v2(dev: *mut CUdevice, ctx: CUcontext) {
        let c = resolve(ctx)?;
        // SAFETY: caller's output pointer.
        unsafe { out(dev, c.device) }
    }
}

export! {
    fn cuCtxGetFlags(flags: *mut u32) {
        let c = current()?;
        // SAFETY: caller's output pointer.
        unsafe { out(flags, c.flags()) }
    }
}

export! {
    fn cuCtxSetFlags(flags: u32) {
        let c = current()?;
        if flags & !0xff != 0 {
            return Err(INVALID_VALUE);
        }
        c.set_flags(flags);
        Ok(())
    }
}

export! {
    fn cuCtxGetLimit(value: *mut usize, limit: u32) {
        let c = current()?;
        let v = c.limit(limit)?;
        // SAFETY: caller's output pointer.
        unsafe { out(value, v) }
    }
}

export! {
    fn cuCtxSetLimit(limit: u32, value: usize) {
        let c = current()?;
        c.limit(limit)?;
        // SHMEM_SIZE and CIG_ENABLED can only be queried.
        if matches!(limit, 7 | 8) {
            return Err(INVALID_VALUE);
        }
        c.limits.lock().unwrap_or_else(|e| e.into_inner())[limit as usize] = value;
        Ok(())
    }
}

export! {
    fn cuCtxGetCacheConfig(config: *mut u32) {
        let c = current()?;
        // SAFETY: caller's output pointer.
        unsafe { out(config, c.cache_config.load(Ordering::Relaxed)) }
    }
}

export! {
    fn cuCtxSetCacheConfig(config: u32) {
        let c = current()?;
        if config > 3 {
            return Err(INVALID_VALUE);
        }
        c.cache_config.store(config, Ordering::Relaxed);
        Ok(())
    }
}

export! {
    fn cuCtxGetStreamPriorityRange(least: *mut i32, greatest: *mut i32) {
        current()?;
        // SAFETY: optional output pointers.
        unsafe {
            out_opt(least, 0);
            out_opt(greatest, crate::stream::GREATEST_PRIORITY);
        }
        Ok(())
    }
}

export! {
    fn cuCtxSynchronize() { current()?.synchronize() }
}

export! {
    fn cuCtxSynchronize_v2(ctx: CUcontext) { resolve(ctx)?.synchronize() }
}

export! {
    fn cuCtxGetApiVersion(ctx: CUcontext, version: *mut u32) {
        resolve(ctx)?;
        // SAFETY: caller's output pointer.
        unsafe { out(version, 3020) }
    }
}

export! {
    fn cuCtxGetId(ctx: CUcontext, id: *mut u64) {
        let c = resolve(ctx)?;
        // SAFETY: caller's output pointer.
        unsafe { out(id, c.id) }
    }
}

export! {
    /// Lets the current context access `peer`'s memory (a context of
    /// another device; the simulated devices are all peers, as GPUs on one
    /// NVLink switch are).
    fn cuCtxEnablePeerAccess(peer: CUcontext, flags: u32) {
        let c = current()?;
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        let p = process::initialized()?.contexts.get_or(peer, INVALID_CONTEXT)?;
        if !p.alive() {
            return Err(INVALID_CONTEXT);
        }
        if p.device == c.device {
            return Err(CUresult::ERROR_INVALID_DEVICE);
        }
        let mut peers = c.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.insert(p.id) {
            return Err(CUresult::ERROR_PEER_ACCESS_ALREADY_ENABLED);
        }
        Ok(())
    }
}

export! {
    fn cuCtxDisablePeerAccess(peer: CUcontext) {
        let c = current()?;
        let p = process::initialized()?.contexts.get_or(peer, INVALID_CONTEXT)?;
        let mut peers = c.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.remove(&p.id) {
            return Err(CUresult::ERROR_PEER_ACCESS_NOT_ENABLED);
        }
        Ok(())
    }
}

export! {
    /// No profiler is attached to the simulated driver: starting and
    /// stopping one succeed with a current context, as without a profiler.
    fn cuProfilerStart() {
        current().map(|_| ())
    }
}

export! {
    fn cuProfilerStop() {
        current().map(|_| ())
    }
}

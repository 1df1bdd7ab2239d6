//! Per-process driver state and handle registries.
//!
//! All state of this process lives in one leaked [`Process`] reached through
//! an atomic pointer. A `pthread_atfork` child handler bumps an epoch
//! counter (an atomic store, nothing else), so the first call in a forked
//! child sees a stale epoch and installs a fresh `Process`: the parent's
//! state is abandoned, never dropped and never locked, because the parent
//! may have held its locks at the moment of `fork`.

use crate::entry::{Res, INVALID_HANDLE};
use cuda_abi::CUresult;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

/// A magic number kept in every object whose address is handed out as a
/// handle; cleared when the object is destroyed.
pub struct Magic(AtomicU32);

impl Magic {
    pub const fn new(v: u32) -> Magic {
        Magic(AtomicU32::new(v))
    }
    pub fn is(&self, v: u32) -> bool {
        self.0.load(Ordering::Acquire) == v
    }
    pub fn kill(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// An object handed out to callers as an opaque pointer.
pub trait Handle: Send + Sync + 'static {
    const MAGIC: u32;
    fn magic(&self) -> &Magic;
}

/// Live objects of one kind, keyed by the address handed out. Lookups never
/// dereference the caller's pointer: an unknown, stale or foreign handle is
/// `CUDA_ERROR_INVALID_HANDLE`, not a segfault.
pub struct Registry<T> {
    map: RwLock<HashMap<usize, Arc<T>>>,
}

impl<T: Handle> Registry<T> {
    pub fn new() -> Registry<T> {
        Registry {
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn insert(&self, v: T) -> Arc<T> {
        let a = Arc::new(v);
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::as_ptr(&a) as usize, a.clone());
        a
    }

    pub fn get(&self, h: *mut c_void) -> Res<Arc<T>> {
        self.get_or(h, INVALID_HANDLE)
    }

    pub fn get_or(&self, h: *mut c_void, err: CUresult) -> Res<Arc<T>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        match map.get(&(h as usize)) {
            Some(a) if a.magic().is(T::MAGIC) => Ok(a.clone()),
            _ => Err(err),
        }
    }

    pub fn remove(&self, h: *mut c_void) -> Res<Arc<T>> {
        let a = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(h as usize))
            .ok_or(INVALID_HANDLE)?;
        a.magic().kill();
        Ok(a)
    }

    pub fn all(&self) -> Vec<Arc<T>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The handle value of a registered object.
pub fn handle_of<T>(a: &Arc<T>) -> *mut c_void {
    Arc::as_ptr(a) as *mut c_void
}

pub struct Process {
    epoch: u64,
    /// Distinguishes this process state from an abandoned parent's, for
    /// thread-local caches.
    pub generation: u64,
    next_id: AtomicU64,
    /// Set by the first `cuInit`: the devices, or the error cuInit reported.
    pub init: OnceLock<Result<Vec<crate::device::Device>, CUresult>>,
    pub contexts: Registry<crate::context::Ctx>,
    pub streams: Registry<crate::stream::Stream>,
    pub events: Registry<crate::event::Event>,
    pub modules: Registry<crate::module::Module>,
    pub functions: Registry<crate::module::Function>,
    pub pools: Registry<crate::pool::Pool>,
    pub arrays: Registry<crate::array::Array>,
    pub graphs: Registry<crate::graph::Graph>,
    pub nodes: Registry<crate::graph::Node>,
    pub execs: Registry<crate::graph::GraphExec>,
    pub textures: crate::texture::Textures,
    pub mem: crate::memory::Table,
    pub host: crate::memory::HostTable,
    pub vmm: crate::vmm::State,
    pub links: Registry<crate::link::LinkState>,
    pub user_objects: Registry<crate::graph::UserObject>,
    pub ipc: crate::ipc::State,
    /// Allocation nodes' memory by address (graph.rs).
    pub graph_allocs: Mutex<BTreeMap<u64, Weak<crate::graph::GraphAlloc>>>,
    /// Graph memory of destroyed executables, until trimmed (graph.rs).
    pub graph_residue: Mutex<Vec<crate::graph::Residue>>,
    /// Graph memory backed per device: (current, high watermark).
    graph_mem: Mutex<HashMap<i32, (u64, u64)>>,
}

impl Process {
    fn new(epoch: u64) -> Process {
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        Process {
            epoch,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            next_id: AtomicU64::new(1),
            init: OnceLock::new(),
            contexts: Registry::new(),
            streams: Registry::new(),
            events: Registry::new(),
            modules: Registry::new(),
            functions: Registry::new(),
            pools: Registry::new(),
            arrays: Registry::new(),
            graphs: Registry::new(),
            nodes: Registry::new(),
            execs: Registry::new(),
            textures: Default::default(),
            mem: crate::memory::Table::new(),
            host: crate::memory::HostTable::new(),
            vmm: crate::vmm::State::new(),
            links: Registry::new(),
            user_objects: Registry::new(),
            ipc: Default::default(),
            graph_allocs: Mutex::new(BTreeMap::new()),
            graph_residue: Mutex::new(Vec::new()),
            graph_mem: Mutex::new(HashMap::new()),
        }
    }

    /// A process-unique id (contexts, streams, graphs).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `delta` bytes to the device's backed graph memory.
    pub fn note_graph_mem(&self, device: i32, delta: i64) {
        let mut m = self.graph_mem.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(device).or_default();
        e.0 = e.0.saturating_add_signed(delta);
        e.1 = e.1.max(e.0);
    }

    /// The device's backed graph memory: (current, high watermark).
    pub fn graph_mem(&self, device: i32) -> (u64, u64) {
        self.graph_mem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&device)
            .copied()
            .unwrap_or_default()
    }

    pub fn reset_graph_mem_high(&self, device: i32) {
        let mut m = self.graph_mem.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(device).or_default();
        e.1 = e.0;
    }

    /// The devices, or `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`.
    pub fn devices(&self) -> Res<&[crate::device::Device]> {
        match self.init.get() {
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(*e),
            None => Err(CUresult::ERROR_NOT_INITIALIZED),
        }
    }

    pub fn device(&self, ordinal: i32) -> Res<&crate::device::Device> {
        let devs = self.devices()?;
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| devs.get(i))
            .ok_or(CUresult::ERROR_INVALID_DEVICE)
    }
}

static CURRENT: AtomicPtr<Process> = AtomicPtr::new(std::ptr::null_mut());
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// This process's driver state (a forked child gets a fresh one).
pub fn get() -> &'static Process {
    let epoch = FORK_EPOCH.load(Ordering::Acquire);
    let p = CURRENT.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: CURRENT only ever holds pointers from Box::leak, never freed.
        let cur = unsafe { &*p };
        if cur.epoch == epoch {
            return cur;
        }
    }
    // Registered before any state exists, without ever waiting (a `Once`
    // here froze children forked while another thread ran it).
    static ATFORK: AtomicBool = AtomicBool::new(false);
    simgpu::forksafe::atfork_child(&ATFORK, after_fork_in_child);
    let fresh: &'static mut Process = Box::leak(Box::new(Process::new(epoch)));
    match CURRENT.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        // Another thread installed one first; ours stays unused (leaked, tiny).
        // SAFETY: as above, pointers in CURRENT are leaked boxes.
        Err(other) => unsafe { &*other },
    }
}

/// `get()` after `cuInit`, else `CUDA_ERROR_NOT_INITIALIZED`.
pub fn initialized() -> Res<&'static Process> {
    let p = get();
    p.devices()?;
    Ok(p)
}

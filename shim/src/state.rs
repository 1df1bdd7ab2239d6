//! The shim's per-process state and its life cycle.
//!
//! Nothing happens at load time: no constructor, no thread, no I/O. The state
//! is built on the first call of a hooked entry point (parsing the
//! configuration from the environment), published through an atomic pointer,
//! and never freed. Threads that race to build it each build their own and
//! the first to publish wins (nobody waits, so a fork in the middle leaves
//! nothing half-done). `fork` is handled by a child handler, registered
//! before the state is published, that only stores an atomic: the child then
//! builds fresh state on its next CUDA call (its parent's allocations and
//! contexts are not its own; the old state, whose locks another thread may
//! have held at the fork, is abandoned).

use crate::log;
use cuda_abi::{CUdevice, CUresult};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Mutex, MutexGuard, OnceLock};
use tslice_policy::gate::GateConfig;
use tslice_policy::ledger::MemLedger;
use tslice_policy::quota::{self, MemLimit, PerDevice, Ppm};
use tslice_policy::vmm::Vmm;

use crate::gate::DeviceGate;

/// Devices (CUDA ordinals) the shim keeps state for.
pub const MAX_DEVICES: usize = 64;

/// What every hooked call returns when the configuration is invalid.
pub const FAIL_CLOSED: CUresult = CUresult::ERROR_NOT_PERMITTED;

/// Memory charged for one object, on which device, and by which context
/// (0 for allocations that outlive contexts, as VMM ones do).
#[derive(Clone, Copy, Debug)]
pub struct Charge {
    pub dev: u16,
    pub bytes: u64,
    pub ctx: usize,
}

const COUNT_UNKNOWN: u8 = 0;
const COUNT_ONE: u8 = 1;
const COUNT_MANY: u8 = 2;

const UNRESOLVED: u8 = 0;
const UNLIMITED: u8 = 1;
const LIMITED: u8 = 2;

pub struct DeviceState {
    /// The CUDA ordinal.
    pub index: u16,
    /// Standalone: the cap from the environment. Under a broker: what the
    /// broker reserved for this process from its tenant's ledger (the
    /// credit), and what it uses.
    pub ledger: MemLedger,
    /// Under a broker: the process's own cap from the environment, which
    /// can only lower the tenant's (no cap: `u64::MAX`).
    pub own: MemLedger,
    limit_state: AtomicU8,
    /// The device's real memory (set with the cap).
    total: AtomicU64,
}

impl DeviceState {
    fn new(index: usize) -> DeviceState {
        DeviceState {
            index: index as u16,
            ledger: MemLedger::new(u64::MAX),
            own: MemLedger::new(u64::MAX),
            limit_state: AtomicU8::new(UNRESOLVED),
            total: AtomicU64::new(u64::MAX),
        }
    }
    pub fn is_limited(&self) -> bool {
        self.limit_state.load(Ordering::Acquire) == LIMITED
    }
    /// Whether `bytes` could never fit on the device, cap or no cap: such a
    /// request is the driver's to refuse, with the driver's error class.
    pub fn beyond_device(&self, bytes: u64) -> bool {
        bytes > self.total.load(Ordering::Relaxed)
    }
}

pub struct Shim {
    /// The configuration is invalid: every hooked call fails.
    fail_closed: bool,
    /// The broker this process must use, and what to do without it.
    broker_target: Option<(std::path::PathBuf, crate::broker::NoBroker)>,
    /// The connection, once tried (None: standalone, or refused).
    broker: OnceLock<Option<&'static crate::broker::Broker>>,
    /// The broker could not be reached and `TSLICE_NO_BROKER=refuse`: every
    /// hooked call fails, as with an invalid configuration.
    refused: AtomicBool,
    /// `cuInit` succeeded in this process (this state is rebuilt after a
    /// fork, where the child must initialise CUDA again).
    cuda_initialised: AtomicBool,
    mem_limits: Option<PerDevice<MemLimit>>,
    compute_limits: Option<PerDevice<Ppm>>,
    /// Burst and in-flight bound of the gates (TSLICE_COMPUTE_BURST, _INFLIGHT).
    compute_burst_ns: u64,
    compute_inflight_ns: u64,
    compute_quantum_ns: u64,
    compute_run_ns: u64,
    /// The GPU's timeslice (TSLICE_GPU_TIMESLICE).
    gpu_timeslice_ns: u64,
    pub devices: [DeviceState; MAX_DEVICES],
    /// The compute gate of each device, if a share applies to it.
    gates: [OnceLock<Option<Box<DeviceGate>>>; MAX_DEVICES],
    /// Records of context-bound allocations (device pointers, arrays) and
    /// their ordering against context destruction.
    pub records: crate::records::Records,
    pub vmm: Mutex<Vmm<Charge>>,
    /// Where each memory pool this process created or looked up lives: a
    /// device ordinal, or -1 for pools of host memory (not charged).
    pub pools: ShardedMap<CUdevice>,
    /// Executable graphs with memory-allocation nodes, and the memory of
    /// destroyed ones the driver's graph pool keeps (graphmem.rs).
    pub graph_mem: ShardedMap<crate::graphmem::ExecMem>,
    /// Orders graph-memory bookkeeping with the driver calls it follows.
    pub graph_lock: std::sync::RwLock<()>,
    residue_ids: AtomicU64,
    /// Stream captures in progress in this process.
    captures: AtomicU32,
    /// Whether the process sees a single device (then every launch is on
    /// device 0 and the launch path need not ask the driver which).
    device_count: AtomicU8,
    /// Each device's primary context, as last retained.
    primary: [AtomicUsize; MAX_DEVICES],
}

static SHIM: AtomicPtr<Shim> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    // Only atomics and close(): the child rebuilds everything on its next
    // CUDA call, and must not speak for its parent to the broker.
    SHIM.store(std::ptr::null_mut(), Ordering::Release);
    crate::broker::after_fork_in_child();
}

/// The process's state, built on first use.
#[inline]
pub fn shim() -> &'static Shim {
    let p = SHIM.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: published once fully built and never freed.
        return unsafe { &*p };
    }
    build()
}

#[cold]
#[inline(never)]
fn build() -> &'static Shim {
    // Each racing thread builds its own (parsing a few variables); the first
    // to publish wins and reports what was wrong with the configuration.
    let (state, problems) = Shim::from_env();
    let mine = Box::into_raw(Box::new(state));
    // The fork handler exists before any state does. Two threads may both
    // register it; it is idempotent.
    if !ATFORK.load(Ordering::Acquire) {
        // SAFETY: registers a handler that only stores an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        ATFORK.store(true, Ordering::Release);
    }
    match SHIM.compare_exchange(
        std::ptr::null_mut(),
        mine,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            for p in problems {
                log::always!("{p}; CUDA calls in this process fail with {FAIL_CLOSED}");
            }
            // SAFETY: just published; never freed.
            unsafe { &*mine }
        }
        Err(winner) => {
            // SAFETY: `mine` came from Box::into_raw above and was never shared.
            drop(unsafe { Box::from_raw(mine) });
            // SAFETY: published once fully built and never freed.
            unsafe { &*winner }
        }
    }
}

impl Shim {
    /// The state the environment asks for, and what is wrong with it (each
    /// problem makes the process fail closed).
    fn from_env() -> (Shim, Vec<String>) {
        log::init_from_env();
        let mut problems = Vec::new();
        fn read(problems: &mut Vec<String>, var: &str) -> Option<String> {
            let v = std::env::var_os(var)?;
            match v.into_string() {
                Ok(s) => Some(s),
                Err(v) => {
                    problems.push(format!(
                        "{var}={} is not valid UTF-8",
                        quota::clip(&v.to_string_lossy())
                    ));
                    None
                }
            }
        }
        fn parse_or_fail<T>(
            problems: &mut Vec<String>,
            r: Result<T, quota::QuotaError>,
        ) -> Option<T> {
            r.map_err(|e| problems.push(e.to_string())).ok()
        }
        let hbm = read(&mut problems, "TSLICE_HBM_LIMIT");
        let compute = read(&mut problems, "TSLICE_COMPUTE_LIMIT");
        let mem_limits = hbm.and_then(|s| {
            parse_or_fail(
                &mut problems,
                quota::parse_mem_limits("TSLICE_HBM_LIMIT", &s),
            )
        });
        let compute_limits = compute.and_then(|s| {
            parse_or_fail(
                &mut problems,
                quota::parse_compute_limits("TSLICE_COMPUTE_LIMIT", &s),
            )
        });
        let defaults = GateConfig::new(Ppm::ONE);
        let mut duration = |var: &str, default: u64| {
            read(&mut problems, var)
                .and_then(|s| parse_or_fail(&mut problems, quota::parse_duration(var, &s)))
                .unwrap_or(default)
        };
        let compute_burst_ns = duration("TSLICE_COMPUTE_BURST", defaults.burst_ns);
        let compute_inflight_ns = duration("TSLICE_COMPUTE_INFLIGHT", defaults.max_inflight_ns);
        let compute_quantum_ns = duration("TSLICE_COMPUTE_QUANTUM", defaults.quantum_ns);
        let compute_run_ns = duration("TSLICE_COMPUTE_RUN", defaults.run_ns);
        let gpu_timeslice_ns = duration("TSLICE_GPU_TIMESLICE", defaults.timeslice_ns);
        let broker_target = crate::broker::target()
            .map_err(|e| problems.push(e))
            .ok()
            .flatten();
        let shim = Shim {
            fail_closed: !problems.is_empty(),
            broker_target,
            broker: OnceLock::new(),
            refused: AtomicBool::new(false),
            cuda_initialised: AtomicBool::new(false),
            mem_limits,
            compute_limits,
            compute_burst_ns,
            compute_inflight_ns,
            compute_quantum_ns,
            compute_run_ns,
            gpu_timeslice_ns,
            devices: std::array::from_fn(DeviceState::new),
            gates: [const { OnceLock::new() }; MAX_DEVICES],
            records: crate::records::Records::new(),
            vmm: Mutex::new(Vmm::default()),
            pools: ShardedMap::new(),
            graph_mem: ShardedMap::new(),
            graph_lock: std::sync::RwLock::new(()),
            residue_ids: AtomicU64::new(0),
            captures: AtomicU32::new(0),
            device_count: AtomicU8::new(COUNT_UNKNOWN),
            primary: [const { AtomicUsize::new(0) }; MAX_DEVICES],
        };
        (shim, problems)
    }

    /// Every hooked call fails: the configuration is invalid, or the broker
    /// it must use could not be reached.
    #[inline]
    pub fn closed(&self) -> bool {
        self.fail_closed || self.refused.load(Ordering::Relaxed)
    }

    /// True when memory is capped on some device (by the environment or a
    /// broker).
    #[inline]
    pub fn mem_on(&self) -> bool {
        self.mem_limits.is_some() || self.broker_target.is_some()
    }

    /// This process's pid as the node sees it (NVML's numbering): the
    /// broker's, when connected (a process in a container's pid namespace
    /// knows itself by another number), else `getpid()`.
    pub fn host_pid(&self) -> u32 {
        let from_broker = self
            .broker
            .get()
            .copied()
            .flatten()
            .map_or(0, |b| b.budget().host_pid.load(Ordering::Relaxed));
        if from_broker != 0 {
            return from_broker;
        }
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() as u32 }
    }

    /// Records that `cuInit` succeeded in this process.
    pub fn set_cuda_initialised(&self) {
        self.cuda_initialised.store(true, Ordering::Release);
    }

    /// Whether `cuInit` succeeded in this process (the driver may be asked
    /// about devices; before it, the shim never touches the driver for
    /// NVML's sake).
    pub fn cuda_initialised(&self) -> bool {
        self.cuda_initialised.load(Ordering::Acquire)
    }

    /// The node broker's socket, if there is one (connected or not).
    pub fn broker_socket(&self) -> Option<&std::path::Path> {
        self.broker_target.as_ref().map(|(p, _)| p.as_path())
    }

    /// The broker's socket, when this process is connected to it.
    pub fn connected_broker(&self) -> Option<&std::path::Path> {
        self.broker.get().copied().flatten()?;
        self.broker_socket()
    }

    /// The broker connection, made on first need (after `cuInit`: the
    /// process's devices are part of the handshake). None: standalone.
    pub fn broker(&self) -> Option<&'static crate::broker::Broker> {
        let (path, policy) = self.broker_target.as_ref()?;
        if let Some(b) = self.broker.get() {
            return *b;
        }
        // Not initialised yet: nothing to connect about (and nothing
        // decided: the next call after cuInit tries).
        let devices = broker_devices().ok()?;
        *self.broker.get_or_init(|| {
            match crate::broker::Broker::connect(path.clone(), devices) {
                Ok(b) => Some(b),
                Err(e) => {
                    match policy {
                        crate::broker::NoBroker::Refuse => {
                            self.refused.store(true, Ordering::Release);
                            log::always!(
                                "cannot reach the tslice broker at {}: {e}; CUDA calls in this process fail with {FAIL_CLOSED} (TSLICE_NO_BROKER=standalone runs without it)",
                                path.display()
                            );
                        }
                        crate::broker::NoBroker::Standalone => log::warn!(
                            "cannot reach the tslice broker at {}: {e}; running standalone (TSLICE_NO_BROKER=standalone)",
                            path.display()
                        ),
                    }
                    None
                }
            }
        })
    }

    /// Connects to the broker if there is one (`cuInit` calls this once the
    /// driver is initialised); Err when the process must fail closed.
    pub fn connect_broker(&self) -> Result<(), CUresult> {
        if self.broker_target.is_some() {
            let _ = self.broker();
        }
        if self.closed() {
            Err(FAIL_CLOSED)
        } else {
            Ok(())
        }
    }

    /// Reserves `bytes` on a capped device: from the process's own cap and,
    /// under a broker, from what the broker reserved for it (asking for more
    /// when that runs out).
    pub fn reserve_mem(
        &self,
        d: &DeviceState,
        bytes: u64,
    ) -> Result<(), tslice_policy::ledger::Denied> {
        let Some(b) = self.broker() else {
            return d.ledger.try_reserve(bytes);
        };
        d.own.try_reserve(bytes)?;
        let mut asked = 0;
        let r = loop {
            match d.ledger.try_reserve(bytes) {
                Ok(()) => break Ok(()),
                Err(denied) if asked < 3 => {
                    asked += 1;
                    // Only what the unused reservation does not cover.
                    let need = tslice_policy::ledger::charge_for(
                        bytes.saturating_sub(d.ledger.credit()).max(1),
                    );
                    match b.reserve(d.index as usize, need) {
                        Some(g) => d.ledger.grant(g),
                        None => break Err(denied),
                    }
                }
                Err(denied) => break Err(denied),
            }
        };
        if r.is_err() {
            d.own.release(bytes);
        }
        self.report_mem(b, d);
        r
    }

    /// Gives `bytes` back on a capped device; under a broker, unused
    /// reservation beyond a chunk goes back to the tenant.
    pub fn release_mem(&self, d: &DeviceState, bytes: u64) {
        d.ledger.release(bytes);
        let Some(b) = self.broker() else { return };
        d.own.release(bytes);
        let slack = d.ledger.credit();
        if slack > 2 * BROKER_CHUNK {
            let give = slack - BROKER_CHUNK;
            if d.ledger.take_back(give) {
                b.release(d.index as usize, give);
            }
        }
        self.report_mem(b, d);
    }

    /// The broker asks for the unused reservation on `dev` (a sibling of the
    /// tenant needs it).
    pub fn broker_reclaim(&self, dev: usize) {
        let (Some(b), Some(d)) = (self.broker.get().copied().flatten(), self.devices.get(dev))
        else {
            return;
        };
        let give = d.ledger.credit();
        if give > 0 && d.ledger.take_back(give) {
            b.release(dev, give);
        }
        self.report_mem(b, d);
    }

    /// What the process holds on device `i` (reserved, used), for the
    /// broker's ledger after a reconnect.
    pub fn broker_holdings(&self, i: usize) -> (u64, u64) {
        self.devices.get(i).map_or((0, 0), |d| {
            (d.ledger.credit() + d.ledger.used(), d.ledger.used())
        })
    }

    fn report_mem(&self, b: &crate::broker::Broker, d: &DeviceState) {
        if let Some(p) = b.process().dev.get(d.index as usize) {
            p.mem_used.store(d.ledger.used(), Ordering::Relaxed);
            p.mem_credit.store(d.ledger.credit(), Ordering::Relaxed);
            p.mem_peak.store(d.ledger.peak(), Ordering::Relaxed);
            p.mem_denials.store(d.ledger.denials(), Ordering::Relaxed);
        }
    }

    /// The cap a process sees on a capped device (meminfo, stats): its
    /// tenant's limit under a broker (or its own, if lower).
    pub fn mem_limit_shown(&self, d: &DeviceState) -> u64 {
        match self.broker.get().copied().flatten() {
            Some(b) => {
                let tenant = b
                    .budget()
                    .dev
                    .get(d.index as usize)
                    .map_or(u64::MAX, |x| x.mem_limit.load(Ordering::Relaxed));
                tenant.min(d.own.limit())
            }
            None => d.ledger.limit(),
        }
    }

    /// What a process may still allocate on a capped device: under a broker,
    /// its tenant's limit less what the tenant's other processes hold and
    /// what it uses itself (exact for its own allocations and frees, which
    /// the broker may not have heard of yet).
    pub fn mem_available(&self, d: &DeviceState) -> u64 {
        match self.broker.get().copied().flatten() {
            Some(b) => {
                let (limit, others) =
                    b.budget()
                        .dev
                        .get(d.index as usize)
                        .map_or((u64::MAX, 0), |x| {
                            // The three values of one update (the page is a
                            // sequence lock; a few tries, then the last read:
                            // the broker's grant is what finally decides).
                            let page = b.budget();
                            let mut read = (0, 0, 0);
                            for _ in 0..8 {
                                let gen = page.generation.load(Ordering::Acquire);
                                read = (
                                    x.mem_limit.load(Ordering::Relaxed),
                                    x.mem_reserved.load(Ordering::Relaxed),
                                    x.mem_mine.load(Ordering::Relaxed),
                                );
                                std::sync::atomic::fence(Ordering::Acquire);
                                if gen % 2 == 0 && page.generation.load(Ordering::Relaxed) == gen {
                                    break;
                                }
                            }
                            let (limit, all, mine) = read;
                            (limit, all.saturating_sub(mine))
                        });
                limit
                    .saturating_sub(others)
                    .saturating_sub(d.ledger.used())
                    .min(d.own.available())
            }
            None => d.ledger.available(),
        }
    }

    pub fn remember_primary(&self, dev: CUdevice, ctx: cuda_abi::CUcontext) {
        if let Some(p) = usize::try_from(dev).ok().and_then(|i| self.primary.get(i)) {
            p.store(ctx as usize, Ordering::Release);
        }
    }

    pub fn primary_of(&self, dev: CUdevice) -> Option<cuda_abi::CUcontext> {
        let p = self
            .primary
            .get(usize::try_from(dev).ok()?)?
            .load(Ordering::Acquire);
        (p != 0).then_some(p as cuda_abi::CUcontext)
    }

    /// A context was destroyed with the allocations whose `charges` are
    /// given back here; the gates forget their events in it.
    pub fn context_gone(&self, ctx: cuda_abi::CUcontext, charges: Vec<Charge>) {
        for c in &charges {
            if let Some(d) = self.devices.get(c.dev as usize) {
                self.release_mem(d, c.bytes);
            }
        }
        for g in self.gates.iter().filter_map(|g| g.get()).flatten() {
            g.forget_context(ctx);
        }
        if !charges.is_empty() {
            log::info!(
                "a context was destroyed: {} allocations given back",
                charges.len()
            );
        }
    }

    pub fn capture_began(&self) {
        self.captures.fetch_add(1, Ordering::AcqRel);
    }

    pub fn capture_ended(&self) {
        let _ = self
            .captures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// A key for graph memory no executable holds any more (never an
    /// executable's handle: the top bit is set).
    pub fn residue_key(&self) -> u64 {
        (1 << 63) | self.residue_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether some stream of this process may be capturing.
    #[inline]
    pub fn captures_active(&self) -> bool {
        self.captures.load(Ordering::Acquire) > 0
    }

    /// Whether the process sees a single device (asked of the driver once).
    fn single_device(&self) -> Result<bool, CUresult> {
        match self.device_count.load(Ordering::Acquire) {
            COUNT_ONE => Ok(true),
            COUNT_MANY => Ok(false),
            _ => {
                let n = crate::real::device_count()?;
                self.device_count.store(
                    if n == 1 { COUNT_ONE } else { COUNT_MANY },
                    Ordering::Release,
                );
                Ok(n == 1)
            }
        }
    }

    /// The device a launch goes to: the current context's device, known
    /// without a driver call when the process sees a single device.
    pub fn launch_device(&self) -> Result<CUdevice, CUresult> {
        if self.single_device()? {
            Ok(0)
        } else {
            crate::real::current_device()
        }
    }

    /// The device that a stream-ordered allocation on `stream` lives on:
    /// the stream's own device (not the current one), known without a
    /// driver call when the process sees a single device. `per_thread`: the
    /// entry point was a `_ptsz` one, so a NULL stream is the calling
    /// thread's default stream. A driver without `cuStreamGetDevice`
    /// (before CUDA 12.8) gives the current device.
    pub fn stream_device(
        &self,
        stream: cuda_abi::CUstream,
        per_thread: bool,
    ) -> Result<CUdevice, CUresult> {
        if self.single_device()? {
            return Ok(0);
        }
        let stream = if per_thread && stream.is_null() {
            cuda_abi::CU_STREAM_PER_THREAD
        } else {
            stream
        };
        match crate::real::stream_device(stream) {
            Err(CUresult::ERROR_NOT_FOUND) => crate::real::current_device(),
            r => r,
        }
    }

    /// Warns once, after `cuInit`, about per-device entries of the limits
    /// that match none of the devices this process sees (an unknown UUID,
    /// an ordinal past the last device): they cap nothing.
    pub fn check_device_lists(&self) {
        static CHECKED: AtomicBool = AtomicBool::new(false);
        if self.mem_limits.is_none() && self.compute_limits.is_none() {
            return;
        }
        if CHECKED.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(n) = crate::real::device_count() else {
            return;
        };
        let devices: Vec<(u32, Option<String>)> = (0..n.max(0))
            .map(|d| (d as u32, crate::real::device_uuid(d).ok()))
            .collect();
        let lists = [
            (
                "TSLICE_HBM_LIMIT",
                self.mem_limits.as_ref().map(|l| l.unmatched(&devices)),
            ),
            (
                "TSLICE_COMPUTE_LIMIT",
                self.compute_limits.as_ref().map(|l| l.unmatched(&devices)),
            ),
        ];
        for (var, unmatched) in lists {
            for sel in unmatched.into_iter().flatten() {
                log::warn!(
                    "{var}: the entry for {sel} matches none of the {n} devices this process sees; it caps nothing"
                );
            }
        }
    }

    /// True when launches go through the gate: a compute share is
    /// configured, or a broker hands them out.
    #[inline]
    pub fn compute_on(&self) -> bool {
        self.compute_limits.is_some() || self.broker_target.is_some()
    }

    /// The compute gate of `dev`, if a share applies to it (built on first use).
    pub fn gate(&self, dev: CUdevice) -> Option<&DeviceGate> {
        let slot = usize::try_from(dev).ok().and_then(|i| self.gates.get(i))?;
        slot.get_or_init(|| {
            let uuid = crate::real::device_uuid(dev).ok();
            let own = self
                .compute_limits
                .as_ref()
                .and_then(|l| l.for_device(dev as u32, uuid.as_deref()));
            // Under a broker the share comes from its budget page (the
            // environment's can only lower it).
            let link = self
                .broker()
                .filter(|b| (dev as usize) < b.devices.len())
                .map(|b| (b, dev as usize));
            if own.is_none() && link.is_none() {
                return None;
            }
            let cap = own.unwrap_or(Ppm::ONE);
            let mut cfg = GateConfig::new(cap);
            cfg.burst_ns = self.compute_burst_ns;
            cfg.max_inflight_ns = self.compute_inflight_ns;
            cfg.timeslice_ns = self.gpu_timeslice_ns;
            cfg.quantum_ns = self.compute_quantum_ns;
            cfg.run_ns = self.compute_run_ns;
            log::info!(
                "device {dev} ({}): compute share {}{cap}, burst {} us, in flight at most {} us ({} us with the whole device), runs of {} us at half of it",
                uuid.as_deref().unwrap_or("uuid unknown"),
                if link.is_some() {
                    "from the broker, at most "
                } else {
                    ""
                },
                cfg.burst_ns / 1000,
                cfg.max_inflight_ns / 1000,
                cfg.whole_inflight_ns.max(cfg.max_inflight_ns) / 1000,
                cfg.run_ns / 1000
            );
            Some(Box::new(DeviceGate::new(cfg, link, cap)))
        })
        .as_deref()
    }

    /// The gate of `dev` if it exists already (for statistics).
    pub fn gate_if_built(&self, dev: usize) -> Option<&DeviceGate> {
        self.gates.get(dev)?.get()?.as_deref()
    }

    /// The memory state of `dev` if a cap applies to it; resolves the cap
    /// (which may be a share of the device) on first use. Threads that race
    /// here all resolve the same cap; none allocates before it is set.
    pub fn mem_device(&self, dev: CUdevice) -> Result<Option<&DeviceState>, CUresult> {
        if !self.mem_on() {
            return Ok(None);
        }
        let Ok(i) = usize::try_from(dev) else {
            // Not a device: the driver rejects the call.
            return Ok(None);
        };
        let Some(d) = self.devices.get(i) else {
            log::warn!(
                "device {dev} is beyond the {MAX_DEVICES} devices tslice tracks; not capping it"
            );
            return Ok(None);
        };
        match d.limit_state.load(Ordering::Acquire) {
            LIMITED => return Ok(Some(d)),
            UNLIMITED => return Ok(None),
            _ => {}
        }
        let total = crate::real::device_total_mem(dev)?;
        let uuid = crate::real::device_uuid(dev).ok();
        let own = self
            .mem_limits
            .as_ref()
            .and_then(|l| l.for_device(dev as u32, uuid.as_deref()))
            .map(|l| l.resolve(total));
        let (state, cap) = match self.broker() {
            Some(b) if i < b.devices.len() => {
                // The tenant's ledger (through reservations from the broker),
                // and the process's own cap if it set a lower one.
                d.total.store(total, Ordering::Relaxed);
                d.ledger.set_limit(0);
                d.own.set_limit(own.unwrap_or(u64::MAX));
                (LIMITED, Some(self.mem_limit_shown(d)))
            }
            Some(_) => (UNLIMITED, None),
            None => match own {
                Some(bytes) => {
                    d.total.store(total, Ordering::Relaxed);
                    d.ledger.set_limit(bytes);
                    (LIMITED, Some(bytes))
                }
                None => (UNLIMITED, None),
            },
        };
        if d.limit_state
            .compare_exchange(UNRESOLVED, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Some(bytes) = cap {
                log::info!(
                    "device {dev} ({}): HBM cap {bytes} bytes of {total}{}",
                    uuid.as_deref().unwrap_or("uuid unknown"),
                    if self.broker.get().copied().flatten().is_some() {
                        " (the tenant's, from the broker)"
                    } else {
                        ""
                    }
                );
            }
        }
        Ok(cap.map(|_| d))
    }
}

/// The process's devices as the broker is told about them.
fn broker_devices() -> Result<Vec<crate::broker::Device>, CUresult> {
    let n = crate::real::device_count()?.clamp(0, MAX_DEVICES as i32);
    (0..n)
        .map(|i| {
            Ok(crate::broker::Device {
                uuid: crate::real::device_uuid_bytes(i)?,
                total: crate::real::device_total_mem(i)?,
            })
        })
        .collect()
}

/// Reservation a process keeps beyond what it uses (more goes back to the
/// broker when memory is freed).
pub const BROKER_CHUNK: u64 = 64 << 20;

/// A u64-keyed hash map split into shards, so threads allocating at once
/// rarely wait for each other.
pub struct ShardedMap<V> {
    shards: [Mutex<HashMap<u64, V, BuildHasherDefault<MixHasher>>>; 16],
}

impl<V> ShardedMap<V> {
    pub fn new() -> Self {
        ShardedMap {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
        }
    }
    fn shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, V, BuildHasherDefault<MixHasher>>> {
        let i = (mix(key) >> 60) as usize;
        // A poisoned shard only means a panic elsewhere; its map is still consistent.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn insert(&self, key: u64, v: V) {
        self.shard(key).insert(key, v);
    }
    pub fn remove(&self, key: u64) -> Option<V> {
        self.shard(key).remove(&key)
    }
    pub fn get(&self, key: u64) -> Option<V>
    where
        V: Copy,
    {
        self.shard(key).get(&key).copied()
    }
    /// Removes and returns every entry whose value `pred` selects.
    pub fn take_where(&self, pred: impl Fn(&V) -> bool) -> Vec<(u64, V)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<u64> = m.iter().filter(|(_, v)| pred(v)).map(|(k, _)| *k).collect();
            out.extend(
                keys.into_iter()
                    .filter_map(|k| m.remove(&k).map(|v| (k, v))),
            );
        }
        out
    }
}

pub(crate) fn mix(x: u64) -> u64 {
    (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Hashes a u64 key with one multiply (keys are addresses and handles).
#[derive(Default)]
pub struct MixHasher(u64);
impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ *b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = mix(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_map_keeps_every_entry_apart() {
        let m: ShardedMap<u64> = ShardedMap::new();
        for k in 0..10_000u64 {
            m.insert(k * 0x20_0000, k);
        }
        assert_eq!(m.get(0x20_0000 * 7), Some(7));
        assert_eq!(m.remove(0x20_0000 * 7), Some(7));
        assert_eq!(m.remove(0x20_0000 * 7), None);
        assert_eq!(m.get(1), None);
        let odd = m.take_where(|v| v % 2 == 1);
        assert_eq!(odd.len(), 4_999, "7 was removed");
        assert!(odd.iter().all(|(k, v)| k / 0x20_0000 == *v && v % 2 == 1));
        assert!(m.take_where(|v| v % 2 == 1).is_empty());
        assert_eq!(m.take_where(|_| true).len(), 5_000);
    }

    #[test]
    fn sharded_map_spreads_aligned_addresses_over_its_shards() {
        let mut used = [false; 16];
        for k in 0..64u64 {
            used[(mix(k << 21) >> 60) as usize] = true;
        }
        assert!(
            used.iter().filter(|u| **u).count() >= 12,
            "2 MiB-aligned keys spread: {used:?}"
        );
    }
}

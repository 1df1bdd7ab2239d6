//! # simgpu: the simulated GPU that every process on the machine shares
//!
//! CONTRACT (written before the implementation; the implementation must keep
//! these signatures and semantics, and may add to them):
//!
//! * A simulated device lives in a shared-memory file `<dir>/device<N>.shm`
//!   (`dir` from [`Config`]). Every process that opens device N with the same
//!   `dir` shares it: one memory ledger, one time-sliced execution engine.
//! * Time is real wall-clock time: `CLOCK_MONOTONIC` in nanoseconds ([`now_ns`]).
//! * Work is submitted by contexts ([`Context`]) into a bounded per-context
//!   queue (the pushbuffer). The device runs one context at a time, FIFO within
//!   a context, round-robin between contexts that have pending work, with a
//!   timeslice and a context-switch cost (see `sched` docs).
//! * The model advances lazily: whoever calls in (submit, query, wait,
//!   monitor) advances the shared simulation to "now" under the device lock.
//! * Ground truth (which process ran when, memory used and peak per process)
//!   is kept in the shared file and survives the processes that produced it,
//!   so tests read it with [`Monitor`] after their children exit.
//!
//! # How it works
//!
//! **Shared file.** `Device::open` opens `<dir>/device<N>.shm` with
//! `O_CREAT`, takes `flock(LOCK_EX)`, and if the file is new (or was left
//! uninitialized by a creator that died) reserves it with `posix_fallocate`
//! (so a full `/dev/shm` is a clean error, not a later `SIGBUS`), maps it
//! `MAP_SHARED`, initializes it and publishes the magic last. Otherwise it
//! validates magic, layout version, sizes and offsets, and refuses a file
//! that does not match (it never reinterprets one). The layout is described
//! in the `shm` module: a header with a process-shared, robust pthread
//! mutex, the [`model::State`] (fixed-size tables of integers, no pointers:
//! indices only), then the queues. The first creator fixes memory size,
//! timeslice, switch cost and queue depth. Everything is done under the
//! mutex; a holder that dies leaves it `EOWNERDEAD`, and the next locker
//! makes it consistent and repairs derived state (ledger sum, queue
//! lengths and remaining totals, ready bits, scheduler times).
//!
//! **Memory ledger.** Per device total/used/peak, per process used/peak.
//! [`Device::mem_charge`] is all-or-nothing under the lock, so the ledger
//! never exceeds the total. Before reporting out-of-memory it reaps dead
//! processes (their memory is released, as a real driver does at exit) and
//! retries once.
//!
//! **Processes.** A process slot is keyed by (pid, start time from
//! `/proc/<pid>/stat` field 22), so a reused pid is a new process. The
//! caller's identity is cached per process and the cache is cleared in fork
//! children (`pthread_atfork`), so a child gets its own slot and contexts; a
//! child cannot submit to its parent's contexts ([`SimError::NotOwner`]), as
//! with CUDA, where a child must initialize again. Dead processes are found
//! by `kill(pid, 0) == ESRCH`, and by start-time mismatch or zombie state
//! from `/proc` (one process per periodic round, all of them before an OOM
//! and on every [`Monitor::snapshot`]). The periodic check runs at most every
//! 10 ms, from the advance path, with the syscalls made outside the lock. A
//! dead process's pending work is discarded and its memory released; its
//! stats are kept (`alive = false`). Slots of dead processes are reused,
//! oldest death first, only when the table (256 processes) is full; context
//! slots (64 per device) likewise, after never-used ones.
//!
//! **Execution model** (module [`sched`] for the rules, [`model`] for the
//! queues). Real time, advanced lazily and deterministically: every call
//! that touches a device takes the lock and runs `advance(now)`, a pure
//! function of the shared state and `now`. Work submitted at `t` is eligible
//! from `t` (the submitter advances to `t` first). One context runs at a
//! time; its timeslice (default 1024 us) starts when it is switched in; at
//! the slice end it is preempted, even mid-kernel (the kernel keeps its
//! remaining time), if another context is ready, and the device switches
//! round-robin (by context index) paying `switch_ns` (default 90 us, which
//! gives the ~8% loss of two saturating tenants: 90/(1024+90)); otherwise
//! its slice renews. A resident that runs out of work hands over at once; an
//! idle device keeps its resident, which restarts without a switch. All
//! streams of a context are serialized in submission order (one FIFO per
//! context). Markers (event records) are processed by the context's channel,
//! which runs only while the context is resident, as on a real GPU: they
//! wait for the device like kernels and take 1 ns of it
//! ([`model::MIN_DEVICE_NS`], also the least any kernel takes), so an event
//! recorded while a neighbour holds the device is stamped after the switch.
//! Copies and memsets run on the copy engines, which are not modelled: they
//! complete when every earlier item of their context has completed.
//!
//! **Blocking.** [`Context::wait`] and a full queue in [`Context::submit`]
//! sleep (`clock_nanosleep`, absolute deadlines), never spin. The sleep
//! target is a projection: the pure scheduler run forward on a compact copy
//! (each context's remaining work) until the awaited item completes,
//! assuming nothing new arrives. New work elsewhere can only delay an item,
//! so the projection is a lower bound and the waiter never oversleeps the
//! model; sleeps are capped at 1 ms so that deaths of others (which can make
//! things earlier) are noticed. The wake-up latency is one sleep's overshoot:
//! while it sleeps, a waiter lowers its thread's timer slack to 1 us (Linux
//! defaults to 50 us) and restores it afterwards; what remains is the
//! kernel's wake-up and scheduling delay (see `simgpu/README.md` for
//! measured numbers).
//!
//! **Ground truth.** Per context and per process: busy ns and items
//! completed; device-wide: busy/idle/switching ns and context switches, and a
//! ring of the last 262144 run segments `[start, end)` (pid, context;
//! contiguous runs of one context merged). [`Monitor::busy_between`]
//! integrates a pid's segments over a window; [`Monitor::busy_report`] also
//! says whether the window is older than what the ring retains;
//! [`Monitor::runs_between`] lists the runs themselves (when each piece of
//! work started and finished on the device, for latencies). A segment is
//! one uninterrupted run, so retention is 262144 times the spacing of runs:
//! unbounded for a tenant whose queue never drains (one growing segment),
//! about 5 minutes for two saturating tenants alternating every 1.1 ms,
//! about 10 s for a kernel + synchronize loop at 40 us per iteration, and
//! only about 50 ms in the extreme of 100 ns kernels submitted one by one to
//! an idle device (each a segment of its own). Scanning a window costs
//! O(segments in it) under the lock: monitor calls, not hot paths.
//!
//! **Not modelled.** Copy engines (copies take no device time and never
//! occupy the device; they only wait for earlier work of their context),
//! concurrent kernels within a
//! context (a context's streams are one FIFO), MPS, stream or context
//! priorities, preemption latency beyond the switch cost, memory bandwidth,
//! and the per-context memory overhead of a real driver.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod config;
pub mod forksafe;
pub mod model;
pub mod sched;
mod shm;
mod sys;

use model::{Candidates, Core, CtxFault, Plan, SimCfg, NO_EVENT};
use shm::Shm;

pub use model::{BusyReport, RunsReport};
/// The device files' layout version (files of another version are refused).
pub use shm::LAYOUT_VERSION;

/// Monotonic clock in nanoseconds (`CLOCK_MONOTONIC`, shared by all processes).
pub fn now_ns() -> u64 {
    sys::now_ns()
}

/// Configuration of the simulated devices, read from the environment by
/// [`Config::from_env`]. Every variable is optional.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `SIMCUDA_DIR` | directory of the shared device files | `/dev/shm/simcuda-<uid>` |
/// | `SIMCUDA_DEVICES` | number of devices, 1..=16 | 1 |
/// | `SIMCUDA_MEM` | memory per device: bytes or `80GiB`, `512MiB`, `16G` | `80GiB` |
/// | `SIMCUDA_TIMESLICE_US` | timeslice per context | 1024 |
/// | `SIMCUDA_SWITCH_US` | cost of a context switch | 90 |
/// | `SIMCUDA_QUEUE_DEPTH` | pending work items per context before submit blocks | 1024 |
///
/// The first process to create a device file fixes its memory size, timeslice
/// and switch cost; later processes attach to what is there.
///
/// Accepted ranges: `SIMCUDA_DIR` an absolute path; `SIMCUDA_TIMESLICE_US`
/// 1..=1000000; `SIMCUDA_SWITCH_US` 0..=1000000; `SIMCUDA_QUEUE_DEPTH`
/// 1..=65536 (also fixed by the creator); `SIMCUDA_MEM` at least 1 byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dir: PathBuf,
    pub devices: u32,
    pub mem_bytes: u64,
    pub timeslice_ns: u64,
    pub switch_ns: u64,
    pub queue_depth: u32,
}

impl Config {
    /// Reads the variables above. An invalid value is an error whose message
    /// names the variable, the value and the accepted forms.
    pub fn from_env() -> Result<Config, String> {
        config::from_lookup(&|k| std::env::var_os(k))
    }

    /// The default directory, `/dev/shm/simcuda-<uid>`.
    pub fn default_dir() -> PathBuf {
        config::default_dir()
    }

    /// The device directory alone: `SIMCUDA_DIR` or the default (for tools
    /// that only read devices and should not fail on other variables).
    pub fn dir_from_env() -> Result<PathBuf, String> {
        let get = |k: &str| {
            if k == "SIMCUDA_DIR" {
                std::env::var_os(k)
            } else {
                None
            }
        };
        config::from_lookup(&get).map(|c| c.dir)
    }
}

/// Returned by [`Device::mem_charge`] when the device is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// Why a context operation failed (the `try_` methods).
#[derive(Debug)]
pub enum SimError {
    /// The device could not be locked (its shared mutex is unusable: the
    /// file was damaged). The device is lost for this process.
    Device(io::Error),
    /// The context belongs to another process (e.g. a fork child using its
    /// parent's context; a child must create its own).
    NotOwner,
    /// The context no longer exists (dropped and its slot reused).
    Gone,
    /// The context's process died and its pending work was discarded.
    Lost,
    /// A sequence number that was never submitted on this context.
    InvalidSeq,
    /// An event slot that is not allocated in this context.
    BadEvent,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Device(e) => write!(f, "simulated device unusable: {e}"),
            SimError::NotOwner => write!(f, "context belongs to another process"),
            SimError::Gone => write!(f, "context no longer exists"),
            SimError::Lost => write!(f, "context's process died; its pending work was discarded"),
            SimError::InvalidSeq => {
                write!(f, "sequence number was never submitted on this context")
            }
            SimError::BadEvent => write!(f, "event slot is not allocated in this context"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<CtxFault> for SimError {
    fn from(f: CtxFault) -> SimError {
        match f {
            // Never surfaces: a full queue blocks.
            CtxFault::QueueFull | CtxFault::Gone => SimError::Gone,
            CtxFault::Lost => SimError::Lost,
            CtxFault::InvalidSeq => SimError::InvalidSeq,
            CtxFault::BadEvent => SimError::BadEvent,
        }
    }
}

/// Longest sleep of a waiter before it re-advances the model.
pub const WAIT_CAP_NS: u64 = 1_000_000;

/// Locks the device, advances it to now, runs `f`, unlocks; then, if a
/// periodic liveness check fell due, checks the candidates outside the lock
/// and reaps the dead.
fn with_core<R>(shm: &Shm, f: impl FnOnce(&mut Core<'_>, u64) -> R) -> io::Result<R> {
    // Before the lock: the first call in a process reads /proc/self/stat.
    let (me, _) = sys::identity();
    let mut g = shm.lock()?;
    let mut core = g.core();
    let now = sys::now_ns().max(core.now());
    core.advance(now);
    let r = f(&mut core, now);
    if core.liveness_due(now) {
        let mut cands = Candidates::new();
        core.liveness_candidates(false, me, &mut cands);
        drop(g);
        check_and_reap(shm, &cands);
    }
    Ok(r)
}

/// A full liveness sweep: every live process, start times included.
fn sweep(shm: &Shm) -> io::Result<()> {
    let mut cands = Candidates::new();
    let (me, _) = sys::identity();
    {
        let mut g = shm.lock()?;
        let mut core = g.core();
        let now = sys::now_ns().max(core.now());
        core.advance(now);
        core.liveness_candidates(true, me, &mut cands);
    }
    check_and_reap(shm, &cands);
    Ok(())
}

#[cold]
fn check_and_reap(shm: &Shm, cands: &Candidates) {
    let mut dead = Candidates::new();
    for c in cands.as_slice() {
        // Dead: the process is gone, or its image is (exec ends a program's
        // use of the device as exit does: its image lock is released).
        let image_gone =
            c.check_start && c.image_locked && shm.image_slot_held(c.slot) == Some(false);
        if image_gone || sys::is_dead(c.pid, c.start_time, c.check_start) {
            dead.push(*c);
        }
    }
    if dead.len == 0 {
        return;
    }
    if let Ok(mut g) = shm.lock() {
        let mut core = g.core();
        let now = sys::now_ns().max(core.now());
        core.reap(dead.as_slice(), now);
    }
}

/// This process's slot (registering it), using and refreshing the hint.
/// `id` is [`sys::identity`], taken before the lock.
fn my_slot(shm: &Shm, core: &mut Core<'_>, id: (u32, u64), now: u64) -> Option<usize> {
    let (pid, start) = id;
    let hint = shm.slot_hint.load(std::sync::atomic::Ordering::Relaxed) as usize;
    let mut held = |slot: usize| shm.image_slot_held(slot as u32) != Some(false);
    let (slot, new) = core.process_slot(hint, pid, start, now, &mut held).ok()?;
    // Taken under the device lock, before anyone can see the slot: a checker
    // never finds a live new slot unlocked.
    if new && shm.lock_image_slot(slot as u32) {
        core.set_image_locked(slot);
    }
    shm.slot_hint
        .store(slot as u32, std::sync::atomic::Ordering::Relaxed);
    Some(slot)
}

/// The simulated device's name (the driver and NVML report it).
pub const DEVICE_NAME: &str = "NVIDIA H100 80GB HBM3 (simulated)";

/// The PCI bus number of a device (distinct per device, below 256; the
/// driver and NVML report it).
pub fn pci_bus(ordinal: u32) -> u32 {
    0x18 + 0x0e * ordinal
}

/// One shared simulated device, attached in this process.
pub struct Device {
    shm: Arc<Shm>,
}

impl Device {
    /// Creates (first process) or attaches to `<dir>/device<ordinal>.shm`.
    pub fn open(cfg: &Config, ordinal: u32) -> io::Result<Device> {
        if ordinal >= cfg.devices {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "device {ordinal} does not exist (SIMCUDA_DEVICES={})",
                    cfg.devices
                ),
            ));
        }
        let create = shm::Create {
            cfg: SimCfg {
                mem_total: cfg.mem_bytes,
                timeslice_ns: cfg.timeslice_ns,
                switch_ns: cfg.switch_ns,
                queue_depth: cfg.queue_depth,
                _pad: 0,
            },
        };
        let shm = Shm::open(&cfg.dir, ordinal, Some(create))?;
        Ok(Device { shm: Arc::new(shm) })
    }
    pub fn ordinal(&self) -> u32 {
        self.shm.ordinal
    }
    /// Stable per (dir, ordinal).
    pub fn uuid(&self) -> [u8; 16] {
        self.shm.uuid
    }
    pub fn total_mem(&self) -> u64 {
        self.shm.fixed.mem_total
    }
    /// Timeslice of this device (fixed by the process that created it, which
    /// may differ from this process's `SIMCUDA_TIMESLICE_US`).
    pub fn timeslice_ns(&self) -> u64 {
        self.shm.fixed.timeslice_ns
    }
    /// Context-switch cost of this device (fixed by its creator).
    pub fn switch_ns(&self) -> u64 {
        self.shm.fixed.switch_ns
    }
    /// Pending items per context before `submit` blocks (fixed by the creator).
    pub fn queue_depth(&self) -> u32 {
        self.shm.fixed.queue_depth
    }
    /// The device file.
    pub fn path(&self) -> &Path {
        &self.shm.path
    }
    /// Device memory in use by all processes.
    pub fn mem_used(&self) -> u64 {
        with_core(&self.shm, |core, _| core.st.ledger.used).unwrap_or(0)
    }
    /// Charges `bytes` to the calling process (getpid()). Fails when the
    /// device's used + bytes would exceed its total. Atomic with respect to
    /// every other process: the ledger never exceeds the total.
    ///
    /// Also fails (closed) when the device cannot be locked, or when the
    /// process table is full of live processes.
    pub fn mem_charge(&self, bytes: u64) -> Result<(), OutOfMemory> {
        let id = sys::identity();
        for attempt in 0..2 {
            let ok = with_core(&self.shm, |core, now| {
                my_slot(&self.shm, core, id, now).is_some_and(|s| core.mem_charge(s, bytes).is_ok())
            });
            match ok {
                Ok(true) => return Ok(()),
                Ok(false) if attempt == 0 => {
                    // Reap dead processes (their memory is released), retry once.
                    if sweep(&self.shm).is_err() {
                        return Err(OutOfMemory);
                    }
                }
                _ => return Err(OutOfMemory),
            }
        }
        Err(OutOfMemory)
    }
    /// Returns `bytes` previously charged by the calling process.
    ///
    /// Never returns more than the process holds.
    pub fn mem_uncharge(&self, bytes: u64) {
        let id = sys::identity();
        let _ = with_core(&self.shm, |core, now| {
            if let Some(s) = my_slot(&self.shm, core, id, now) {
                core.mem_uncharge(s, bytes);
            }
        });
    }
    /// Whether work `seq` of context `index` (generation `gen`), possibly
    /// another process's, has completed: what an event shared between
    /// processes (CUDA IPC) asks. Errors as [`Context::try_is_complete`].
    pub fn try_is_complete(&self, index: u32, gen: u64, seq: Seq) -> Result<bool, SimError> {
        with_core(&self.shm, |core, _| {
            core.is_complete(index as usize, gen, seq)
        })
        .map_err(SimError::Device)?
        .map_err(SimError::from)
    }
    /// Claims an execution context for the calling process.
    pub fn create_context(&self) -> io::Result<Context> {
        let id = sys::identity();
        let owner = id.0;
        for attempt in 0..2 {
            let r = with_core(&self.shm, |core, now| {
                let slot = my_slot(&self.shm, core, id, now)?;
                core.create_context(slot, now).ok()
            })?;
            match r {
                Some((index, gen)) => {
                    return Ok(Context {
                        shm: Arc::clone(&self.shm),
                        index,
                        gen,
                        owner,
                    })
                }
                None if attempt == 0 => sweep(&self.shm)?,
                None => break,
            }
        }
        Err(io::Error::other(format!(
            "all {} contexts of simulated device {} are in use (or its 256 process slots hold live processes)",
            sched::MAX_CONTEXTS,
            self.shm.ordinal
        )))
    }
}

/// Sequence number of a work item within its context; 1 is the first item.
/// Items complete in order, so "seq s is complete" implies all earlier are.
pub type Seq = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkKind {
    /// A kernel: occupies the device for `duration_ns` of its context's time.
    Kernel,
    /// A graph launch: its kernels' total duration, run as one item.
    Graph,
    /// A copy or memset: completes when reached (copy engines are not timed).
    Copy,
    /// An event record or other marker: completes when reached, zero duration.
    Marker,
}

#[derive(Clone, Copy, Debug)]
pub struct Work {
    pub kind: WorkKind,
    pub duration_ns: u64,
    /// Free-form tag kept with the item (the driver passes a hash of the kernel name).
    pub tag: u64,
}

/// A timing slot for one event object; see [`Context::alloc_event`].
#[derive(Debug)]
pub struct EventSlot {
    pub index: u32,
}

/// A context of one process on one device. `Send + Sync`: the driver shares
/// it between threads.
///
/// Dropping it (in the owning process) closes the context: work already
/// queued still runs, and the slot becomes reusable once drained.
pub struct Context {
    shm: Arc<Shm>,
    index: usize,
    gen: u64,
    owner: u32,
}

enum Step<T> {
    Done(T),
    Sleep(u64),
}

impl Context {
    /// Enqueues work; returns its sequence number. Blocks (sleeping, not
    /// spinning) while the context already has `queue_depth` pending items.
    ///
    /// Returns 0 (no item) when the work cannot be submitted at all; see
    /// [`Context::try_submit`] for why.
    pub fn submit(&self, work: Work) -> Seq {
        self.try_submit(work).unwrap_or(0)
    }

    /// [`Context::submit`] with its errors.
    pub fn try_submit(&self, work: Work) -> Result<Seq, SimError> {
        self.enqueue(work, NO_EVENT)
    }

    fn enqueue(&self, work: Work, event: u32) -> Result<Seq, SimError> {
        if sys::identity().0 != self.owner {
            return Err(SimError::NotOwner);
        }
        let (c, g) = (self.index, self.gen);
        let mut slack = sys::SlackGuard::new();
        loop {
            let step = with_core(&self.shm, |core, now| -> Result<Step<Seq>, CtxFault> {
                if event != NO_EVENT && !core.event_allocated(c, event) {
                    return Err(CtxFault::BadEvent);
                }
                match core.enqueue(c, g, work, event, now) {
                    Ok(seq) => Ok(Step::Done(seq)),
                    Err(CtxFault::QueueFull) => {
                        let head = core.completed(c, g)?.saturating_add(1);
                        match core.wait_plan(c, g, head, now.saturating_add(WAIT_CAP_NS))? {
                            Plan::Done => Ok(Step::Sleep(now)),
                            Plan::SleepUntil(t) => Ok(Step::Sleep(t)),
                        }
                    }
                    Err(e) => Err(e),
                }
            })
            .map_err(SimError::Device)??;
            match step {
                Step::Done(seq) => return Ok(seq),
                Step::Sleep(t) => {
                    slack.tighten();
                    sys::sleep_until(t)
                }
            }
        }
    }

    /// The sequence number of the last submitted item (0 if none).
    pub fn last_submitted(&self) -> Seq {
        with_core(&self.shm, |core, _| {
            core.last_submitted(self.index, self.gen)
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
    }

    /// Advances the model to now and reports whether `seq` has completed.
    ///
    /// Work that can never complete (its context's process died, or the
    /// device is unusable) reports true so that nobody waits forever; see
    /// [`Context::try_is_complete`] to tell these cases apart.
    pub fn is_complete(&self, seq: Seq) -> bool {
        match self.try_is_complete(seq) {
            Ok(done) => done,
            Err(SimError::InvalidSeq) => false,
            Err(_) => true,
        }
    }

    /// [`Context::is_complete`] with its errors. Works from any process
    /// (queries need no ownership).
    pub fn try_is_complete(&self, seq: Seq) -> Result<bool, SimError> {
        with_core(&self.shm, |core, _| {
            core.is_complete(self.index, self.gen, seq)
        })
        .map_err(SimError::Device)?
        .map_err(SimError::from)
    }

    /// Sleeps until `seq` has completed (fine-grained sleeps, no busy spin).
    ///
    /// Returns at once if `seq` can never complete (see [`Context::try_wait`]).
    pub fn wait(&self, seq: Seq) {
        let _ = self.try_wait(seq);
    }

    /// [`Context::wait`] with its errors.
    pub fn try_wait(&self, seq: Seq) -> Result<(), SimError> {
        let (c, g) = (self.index, self.gen);
        let mut slack = sys::SlackGuard::new();
        loop {
            let plan = with_core(&self.shm, |core, now| {
                core.wait_plan(c, g, seq, now.saturating_add(WAIT_CAP_NS))
            })
            .map_err(SimError::Device)??;
            match plan {
                Plan::Done => return Ok(()),
                Plan::SleepUntil(t) => {
                    slack.tighten();
                    sys::sleep_until(t)
                }
            }
        }
    }

    /// Allocates a timing slot for an event (None when the context's slots are exhausted).
    pub fn alloc_event(&self) -> Option<EventSlot> {
        if sys::identity().0 != self.owner {
            return None;
        }
        with_core(&self.shm, |core, _| core.alloc_event(self.index, self.gen))
            .ok()
            .flatten()
            .map(|index| EventSlot { index })
    }
    pub fn free_event(&self, slot: EventSlot) {
        if sys::identity().0 != self.owner {
            return;
        }
        let _ = with_core(&self.shm, |core, _| {
            core.free_event(self.index, self.gen, slot.index)
        });
    }
    /// Enqueues a marker that stamps `slot` with its completion time.
    ///
    /// Returns 0 when it cannot be recorded (see [`Context::try_record_event`]).
    pub fn record_event(&self, slot: &EventSlot) -> Seq {
        self.try_record_event(slot).unwrap_or(0)
    }

    /// [`Context::record_event`] with its errors. Blocks like `submit` when
    /// the queue is full.
    pub fn try_record_event(&self, slot: &EventSlot) -> Result<Seq, SimError> {
        let marker = Work {
            kind: WorkKind::Marker,
            duration_ns: 0,
            tag: 0,
        };
        self.enqueue(marker, slot.index)
    }

    /// Completion time (ns, [`now_ns`] clock) of the marker `seq` recorded in
    /// `slot`, or None while it has not completed.
    ///
    /// Also None when `slot` was recorded again and that later record has
    /// completed (the slot keeps its latest completed record, as a CUDA event
    /// does).
    pub fn event_time(&self, slot: &EventSlot, seq: Seq) -> Option<u64> {
        self.try_event_time(slot, seq).ok().flatten()
    }

    /// [`Context::event_time`] with its errors.
    pub fn try_event_time(&self, slot: &EventSlot, seq: Seq) -> Result<Option<u64>, SimError> {
        with_core(&self.shm, |core, _| {
            core.event_time(self.index, self.gen, slot.index, seq)
        })
        .map_err(SimError::Device)?
        .map_err(SimError::from)
    }

    /// Index of the context on its device (0..64), as in the ground truth.
    pub fn index(&self) -> u32 {
        self.index as u32
    }

    /// The generation of its slot (a slot is reused by later contexts).
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Pid of the owning process.
    pub fn owner_pid(&self) -> u32 {
        self.owner
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // A fork child dropping its copy of the parent's handle must not
        // close the parent's context.
        if sys::identity().0 == self.owner {
            let _ = with_core(&self.shm, |core, now| {
                core.close_context(self.index, self.gen, now)
            });
        }
    }
}

/// What a process did on a device, as the device saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub pid: u32,
    pub alive: bool,
    pub mem_used: u64,
    pub mem_peak: u64,
    /// Total device time its work has run.
    pub busy_ns: u64,
    pub items_completed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub now_ns: u64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_peak: u64,
    pub context_switches: u64,
    pub processes: Vec<ProcessStats>,
}

/// One context as the monitor sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextStats {
    pub index: u32,
    pub pid: u32,
    /// "open", "closed" (dropped, draining), "done", "dead" (process died).
    pub state: &'static str,
    pub submitted: u64,
    pub completed: u64,
    pub pending: u64,
    pub busy_ns: u64,
}

/// Everything [`Monitor::details`] reports.
#[derive(Clone, Debug, Default)]
pub struct DeviceDetails {
    pub snapshot: Snapshot,
    pub timeslice_ns: u64,
    pub switch_ns: u64,
    pub queue_depth: u32,
    /// Device time running work, idle, and switching contexts (they add up
    /// to the time since the device file was created).
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub switching_ns: u64,
    pub resident: Option<u32>,
    /// Segments ending before this were overwritten (0: none).
    pub retained_from_ns: u64,
    pub contexts: Vec<ContextStats>,
}

/// Read-only view of a device for tests, benchmarks and the `simgpu` CLI.
pub struct Monitor {
    shm: Arc<Shm>,
}

impl Monitor {
    /// Attaches to an existing device file; an error if there is none.
    pub fn open(dir: &Path, ordinal: u32) -> io::Result<Monitor> {
        Ok(Monitor {
            shm: Arc::new(Shm::open(dir, ordinal, None)?),
        })
    }
    /// Advances the model to now and returns the ledger and per-process totals.
    ///
    /// Dead processes are detected first (a full check). A device that cannot
    /// be locked gives an empty snapshot; see [`Monitor::try_snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        self.try_snapshot().unwrap_or_default()
    }
    /// [`Monitor::snapshot`] with its error.
    pub fn try_snapshot(&self) -> io::Result<Snapshot> {
        sweep(&self.shm)?;
        with_core(&self.shm, |core, _| core.snapshot())
    }
    /// Device time the process's work ran within `[from_ns, to_ns)`.
    ///
    /// 0 if the device cannot be locked. The window may start before what
    /// the segment ring retains; [`Monitor::busy_report`] says so.
    pub fn busy_between(&self, pid: u32, from_ns: u64, to_ns: u64) -> u64 {
        self.busy_report(pid, from_ns, to_ns)
            .map_or(0, |r| r.busy_ns)
    }
    /// [`Monitor::busy_between`] with retention information.
    pub fn busy_report(&self, pid: u32, from_ns: u64, to_ns: u64) -> io::Result<BusyReport> {
        with_core(&self.shm, |core, _| core.busy_between(pid, from_ns, to_ns))
    }
    /// When the process's work ran within `[from_ns, to_ns)` (runs clipped
    /// to the window, in time order), with retention information.
    pub fn runs_between(&self, pid: u32, from_ns: u64, to_ns: u64) -> io::Result<RunsReport> {
        with_core(&self.shm, |core, _| core.runs_between(pid, from_ns, to_ns))
    }
    /// Snapshot plus device-wide time totals, configuration and contexts.
    pub fn details(&self) -> io::Result<DeviceDetails> {
        sweep(&self.shm)?;
        with_core(&self.shm, |core, _| core.details())
    }
    pub fn ordinal(&self) -> u32 {
        self.shm.ordinal
    }
    pub fn uuid(&self) -> [u8; 16] {
        self.shm.uuid
    }
    pub fn total_mem(&self) -> u64 {
        self.shm.fixed.mem_total
    }
    pub fn path(&self) -> &Path {
        &self.shm.path
    }
}

/// Formats a UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

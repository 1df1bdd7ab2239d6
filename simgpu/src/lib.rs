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

use std::io;
use std::path::{Path, PathBuf};

/// Monotonic clock in nanoseconds (`CLOCK_MONOTONIC`, shared by all processes).
pub fn now_ns() -> u64 {
    todo!("contract")
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
        todo!("contract")
    }
}

/// Returned by [`Device::mem_charge`] when the device is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// One shared simulated device, attached in this process.
pub struct Device {
    _private: (),
}

impl Device {
    /// Creates (first process) or attaches to `<dir>/device<ordinal>.shm`.
    pub fn open(cfg: &Config, ordinal: u32) -> io::Result<Device> {
        let _ = (cfg, ordinal);
        todo!("contract")
    }
    pub fn ordinal(&self) -> u32 {
        todo!("contract")
    }
    /// Stable per (dir, ordinal).
    pub fn uuid(&self) -> [u8; 16] {
        todo!("contract")
    }
    pub fn total_mem(&self) -> u64 {
        todo!("contract")
    }
    /// Device memory in use by all processes.
    pub fn mem_used(&self) -> u64 {
        todo!("contract")
    }
    /// Charges `bytes` to the calling process (getpid()). Fails when the
    /// device's used + bytes would exceed its total. Atomic with respect to
    /// every other process: the ledger never exceeds the total.
    pub fn mem_charge(&self, bytes: u64) -> Result<(), OutOfMemory> {
        let _ = bytes;
        todo!("contract")
    }
    /// Returns `bytes` previously charged by the calling process.
    pub fn mem_uncharge(&self, bytes: u64) {
        let _ = bytes;
        todo!("contract")
    }
    /// Claims an execution context for the calling process.
    pub fn create_context(&self) -> io::Result<Context> {
        todo!("contract")
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
pub struct Context {
    _private: (),
}

impl Context {
    /// Enqueues work; returns its sequence number. Blocks (sleeping, not
    /// spinning) while the context already has `queue_depth` pending items.
    pub fn submit(&self, work: Work) -> Seq {
        let _ = work;
        todo!("contract")
    }
    /// The sequence number of the last submitted item (0 if none).
    pub fn last_submitted(&self) -> Seq {
        todo!("contract")
    }
    /// Advances the model to now and reports whether `seq` has completed.
    pub fn is_complete(&self, seq: Seq) -> bool {
        let _ = seq;
        todo!("contract")
    }
    /// Sleeps until `seq` has completed (fine-grained sleeps, no busy spin).
    pub fn wait(&self, seq: Seq) {
        let _ = seq;
        todo!("contract")
    }
    /// Allocates a timing slot for an event (None when the context's slots are exhausted).
    pub fn alloc_event(&self) -> Option<EventSlot> {
        todo!("contract")
    }
    pub fn free_event(&self, slot: EventSlot) {
        let _ = slot;
        todo!("contract")
    }
    /// Enqueues a marker that stamps `slot` with its completion time.
    pub fn record_event(&self, slot: &EventSlot) -> Seq {
        let _ = slot;
        todo!("contract")
    }
    /// Completion time (ns, [`now_ns`] clock) of the marker `seq` recorded in
    /// `slot`, or None while it has not completed.
    pub fn event_time(&self, slot: &EventSlot, seq: Seq) -> Option<u64> {
        let _ = (slot, seq);
        todo!("contract")
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

/// Read-only view of a device for tests, benchmarks and the `simgpu` CLI.
pub struct Monitor {
    _private: (),
}

impl Monitor {
    /// Attaches to an existing device file; an error if there is none.
    pub fn open(dir: &Path, ordinal: u32) -> io::Result<Monitor> {
        let _ = (dir, ordinal);
        todo!("contract")
    }
    /// Advances the model to now and returns the ledger and per-process totals.
    pub fn snapshot(&self) -> Snapshot {
        todo!("contract")
    }
    /// Device time the process's work ran within `[from_ns, to_ns)`.
    pub fn busy_between(&self, pid: u32, from_ns: u64, to_ns: u64) -> u64 {
        let _ = (pid, from_ns, to_ns);
        todo!("contract")
    }
}

//! The device state and every operation on it, as pure code: plain `repr(C)`
//! structs of integers (the same bytes live in the shared file), time passed
//! in, no clock reads, no syscalls, no allocation except in read-out
//! functions ([`Core::snapshot`], [`Core::details`]). The shared-memory layer
//! (`shm`) locks the device and hands a [`Core`] to these functions; unit
//! tests build one on the heap and drive it with synthetic times.
//!
//! Everything read from the state is treated as untrusted (another process
//! could have corrupted the file): indices are reduced modulo their table
//! size or looked up with `get`, arithmetic saturates, and nothing here
//! panics on any bit pattern.

use crate::sched::{self, Sched, Timing, Workload, MAX_CONTEXTS};
use crate::{ContextStats, DeviceDetails, ProcessStats, Seq, Snapshot, Work, WorkKind};

/// Process slots per device (alive and dead ones whose stats are kept).
pub const MAX_PROCESSES: usize = 256;
/// Device-wide ring of run segments (see [`Seg`]).
pub const SEGMENTS: usize = 1 << 18;
/// Event timing slots per context.
pub const EVENTS_PER_CONTEXT: usize = 4096;
/// Largest accepted `SIMCUDA_QUEUE_DEPTH`.
pub const MAX_QUEUE_DEPTH: u32 = 65536;
/// How often (model ns) the advance path checks whether processes died.
pub const LIVENESS_PERIOD_NS: u64 = 10_000_000;

pub const KIND_KERNEL: u32 = 0;
pub const KIND_GRAPH: u32 = 1;
pub const KIND_COPY: u32 = 2;
pub const KIND_MARKER: u32 = 3;

/// Device time of a marker (an event record) and the least of any kernel:
/// on a real GPU a channel's methods, event timestamps included, are only
/// processed while its context is scheduled, so they wait for the device
/// like kernels do, and cost next to nothing once there.
pub const MIN_DEVICE_NS: u64 = 1;
/// `Item::event` of an item that stamps no event.
pub const NO_EVENT: u32 = u32::MAX;

pub const P_FREE: u32 = 0;
pub const P_ALIVE: u32 = 1;
pub const P_DEAD: u32 = 2;

/// Never used.
pub const C_FREE: u32 = 0;
/// Owned by a live process, accepting work.
pub const C_OPEN: u32 = 1;
/// Dropped by its owner; its queued work still runs.
pub const C_CLOSED: u32 = 2;
/// Closed and drained: reusable.
pub const C_DONE: u32 = 3;
/// Its process died; its pending work was discarded. Reusable.
pub const C_DEAD: u32 = 4;

/// A queued work item. Items are stored contiguously in submission order, so
/// the item at logical position `i` of a context has seq `completed + 1 + i`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Item {
    pub remaining_ns: u64,
    pub duration_ns: u64,
    pub tag: u64,
    pub kind: u32,
    pub event: u32,
}

/// A run of one context on the device, `[start, end)` in model time.
/// Contiguous runs of the same context are merged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    pub start: u64,
    pub end: u64,
    pub pid: u32,
    pub ctx: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvStamp {
    pub seq: u64,
    pub time: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSlot {
    pub state: u32,
    pub pid: u32,
    /// Start time of the process (`/proc/<pid>/stat` field 22), 0 if unknown.
    pub start_time: u64,
    pub generation: u64,
    pub used: u64,
    pub peak: u64,
    pub busy_ns: u64,
    pub items_completed: u64,
    pub registered_ns: u64,
    pub died_ns: u64,
    /// 1 when the registering image holds the slot's image lock (see
    /// `Shm::lock_image_slot`): then a released lock means the image ended.
    pub image_locked: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxMeta {
    pub state: u32,
    pub proc_slot: u32,
    pub pid: u32,
    pub _pad: u32,
    pub generation: u64,
    pub created_ns: u64,
    pub ended_ns: u64,
    /// Physical index (within the context's queue) of the oldest pending item.
    pub head: u32,
    /// Pending items (not completed).
    pub len: u32,
    pub last_submitted: u64,
    pub completed: u64,
    /// Sum of the remaining time of pending items.
    pub remaining_total: u64,
    pub busy_ns: u64,
    pub items_completed: u64,
    /// Allocation bitmap of the event slots.
    pub ev_used: [u64; EVENTS_PER_CONTEXT / 64],
}

impl Default for CtxMeta {
    fn default() -> Self {
        CtxMeta {
            state: C_FREE,
            proc_slot: 0,
            pid: 0,
            _pad: 0,
            generation: 0,
            created_ns: 0,
            ended_ns: 0,
            head: 0,
            len: 0,
            last_submitted: 0,
            completed: 0,
            remaining_total: 0,
            busy_ns: 0,
            items_completed: 0,
            ev_used: [0; EVENTS_PER_CONTEXT / 64],
        }
    }
}

/// Fixed configuration of a device (set by the process that created it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimCfg {
    pub mem_total: u64,
    pub timeslice_ns: u64,
    pub switch_ns: u64,
    pub queue_depth: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub used: u64,
    pub peak: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub last_check_ns: u64,
    pub cursor: u32,
    pub _pad: u32,
    pub next_generation: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegMeta {
    /// Physical index of the next segment to write.
    pub next: u32,
    /// Segments held (at most [`SEGMENTS`]).
    pub len: u32,
    /// End of the newest segment overwritten: data before it is incomplete.
    pub lost_before_ns: u64,
}

/// The whole state of a device except the queues (whose size depends on the
/// configured depth and which live after it in the file).
#[repr(C)]
pub struct State {
    pub cfg: SimCfg,
    pub sched: Sched,
    pub ledger: Ledger,
    /// Bit c set iff context c has pending timed work (its head item has
    /// remaining time > 0).
    pub ready_mask: u64,
    pub live: Live,
    pub segm: SegMeta,
    pub procs: [ProcSlot; MAX_PROCESSES],
    pub ctxs: [CtxMeta; MAX_CONTEXTS],
    pub segs: [Seg; SEGMENTS],
    pub events: [[EvStamp; EVENTS_PER_CONTEXT]; MAX_CONTEXTS],
}

impl State {
    /// Initializes a zeroed state (a fresh file is all zeros).
    pub fn init(&mut self, cfg: SimCfg, t0: u64) {
        self.cfg = cfg;
        self.cfg.queue_depth = cfg.queue_depth.clamp(1, MAX_QUEUE_DEPTH);
        self.sched = Sched::new(t0);
        self.ledger = Ledger::default();
        self.ready_mask = 0;
        self.live = Live {
            last_check_ns: t0,
            cursor: 0,
            _pad: 0,
            next_generation: 1,
        };
        self.segm = SegMeta::default();
    }
}

/// A memory charge that does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Why an operation on a context failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxFault {
    /// The context's queue holds `queue_depth` pending items.
    QueueFull,
    /// The slot no longer holds this context (generation mismatch) or is not
    /// open for submission.
    Gone,
    /// The owning process died and its pending work was discarded.
    Lost,
    /// A sequence number that was never submitted.
    InvalidSeq,
    /// An event slot that is not allocated in this context.
    BadEvent,
}

/// What a waiter should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Done,
    /// Sleep until this model time (a lower bound of the completion time,
    /// capped at the horizon), then advance and ask again.
    SleepUntil(u64),
}

/// Result of [`Core::busy_between`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyReport {
    /// Device time the process's work ran within the window.
    pub busy_ns: u64,
    /// False when the window starts before `retained_from_ns`: older segments
    /// were overwritten, so `busy_ns` may be short.
    pub complete: bool,
    /// The ring holds every segment that ended after this time (0: all since
    /// the device was created).
    pub retained_from_ns: u64,
}

/// Result of [`Core::runs_between`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunsReport {
    /// `[start, end)` of each run of the process's work within the window.
    pub runs: Vec<(u64, u64)>,
    /// False when the window starts before `retained_from_ns` (older runs
    /// were overwritten).
    pub complete: bool,
    /// The ring holds every segment that ended after this time.
    pub retained_from_ns: u64,
}

/// A process to check for liveness, collected under the lock and checked
/// outside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub slot: u32,
    pub pid: u32,
    pub start_time: u64,
    /// Also compare the start time (and zombie state) from `/proc`, and
    /// whether the image lock is still held.
    pub check_start: bool,
    /// The slot's image holds its image lock (so a released lock is death).
    pub image_locked: bool,
}

/// Fixed-capacity list of candidates (no allocation under the lock).
pub struct Candidates {
    pub items: [Candidate; MAX_PROCESSES],
    pub len: usize,
}

impl Candidates {
    pub fn new() -> Candidates {
        Candidates {
            items: [Candidate::default(); MAX_PROCESSES],
            len: 0,
        }
    }
    pub fn as_slice(&self) -> &[Candidate] {
        self.items.get(..self.len).unwrap_or(&[])
    }
    pub fn push(&mut self, c: Candidate) {
        if let Some(s) = self.items.get_mut(self.len) {
            *s = c;
            self.len += 1;
        }
    }
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates::new()
    }
}

fn kind_code(k: WorkKind) -> u32 {
    match k {
        WorkKind::Kernel => KIND_KERNEL,
        WorkKind::Graph => KIND_GRAPH,
        WorkKind::Copy => KIND_COPY,
        WorkKind::Marker => KIND_MARKER,
    }
}

/// The workload view of the real state, used by the engine.
struct RealWork<'b> {
    ctxs: &'b mut [CtxMeta; MAX_CONTEXTS],
    procs: &'b mut [ProcSlot; MAX_PROCESSES],
    queues: &'b mut [Item],
    depth: usize,
    segm: &'b mut SegMeta,
    segs: &'b mut [Seg; SEGMENTS],
    events: &'b mut [[EvStamp; EVENTS_PER_CONTEXT]; MAX_CONTEXTS],
    ready: &'b mut u64,
}

impl RealWork<'_> {
    /// The item at logical position `i` of context `c`'s queue.
    fn item(&mut self, c: usize, i: usize) -> Option<&mut Item> {
        let head = self.ctxs.get(c)?.head as usize;
        let idx = c
            .checked_mul(self.depth)?
            .checked_add((head % self.depth + i % self.depth) % self.depth)?;
        self.queues.get_mut(idx)
    }

    /// Completes the zero-remaining items at the front of `c`'s queue at time
    /// `t`, then updates `c`'s ready bit and closed state.
    fn settle(&mut self, c: usize, t: u64) {
        let depth = self.depth as u32;
        loop {
            let Some(m) = self.ctxs.get_mut(c) else {
                return;
            };
            // A length beyond the queue (a damaged file) would make this
            // loop run forever over recycled slots.
            m.len = m.len.min(depth);
            if m.len == 0 {
                break;
            }
            let Some(front) = self.item(c, 0).map(|it| *it) else {
                break;
            };
            if front.remaining_ns > 0 {
                break;
            }
            let Some(m) = self.ctxs.get_mut(c) else {
                return;
            };
            m.head = (m.head % depth + 1) % depth;
            m.len -= 1;
            m.completed = m.completed.saturating_add(1);
            m.items_completed = m.items_completed.saturating_add(1);
            let seq = m.completed;
            let pslot = m.proc_slot as usize;
            if let Some(p) = self.procs.get_mut(pslot) {
                p.items_completed = p.items_completed.saturating_add(1);
            }
            if front.event != NO_EVENT {
                if let Some(ev) = self
                    .events
                    .get_mut(c)
                    .and_then(|e| e.get_mut(front.event as usize))
                {
                    *ev = EvStamp { seq, time: t };
                }
            }
        }
        let bit = 1u64 << (c % MAX_CONTEXTS);
        let Some(m) = self.ctxs.get_mut(c) else {
            return;
        };
        if m.len > 0 {
            *self.ready |= bit;
        } else {
            *self.ready &= !bit;
            m.remaining_total = 0;
            if m.state == C_CLOSED {
                m.state = C_DONE;
                m.ended_ns = t;
            }
        }
    }

    fn push_segment(&mut self, pid: u32, c: u32, t0: u64, t1: u64) {
        let n = SEGMENTS as u32;
        let len = self.segm.len.min(n);
        let next = self.segm.next % n;
        if len > 0 {
            let last = ((next + n - 1) % n) as usize;
            if let Some(s) = self.segs.get_mut(last) {
                if s.ctx == c && s.pid == pid && s.end == t0 {
                    s.end = t1;
                    return;
                }
            }
        }
        let Some(s) = self.segs.get_mut(next as usize) else {
            return;
        };
        if len >= n {
            self.segm.lost_before_ns = self.segm.lost_before_ns.max(s.end);
        }
        *s = Seg {
            start: t0,
            end: t1,
            pid,
            ctx: c,
        };
        self.segm.next = (next + 1) % n;
        self.segm.len = (len + 1).min(n);
    }
}

impl Workload for RealWork<'_> {
    fn ready_mask(&self) -> u64 {
        *self.ready
    }
    fn head_remaining(&self, c: usize) -> u64 {
        let Some(m) = self.ctxs.get(c) else {
            return 0;
        };
        if m.len == 0 {
            return 0;
        }
        let idx = c * self.depth + (m.head as usize % self.depth);
        self.queues.get(idx).map_or(0, |it| it.remaining_ns)
    }
    fn run(&mut self, c: usize, t0: u64, t1: u64) {
        let dt = t1.saturating_sub(t0);
        if dt > 0 {
            if let Some(it) = self.item(c, 0) {
                it.remaining_ns = it.remaining_ns.saturating_sub(dt);
            }
            let Some(m) = self.ctxs.get_mut(c) else {
                return;
            };
            m.remaining_total = m.remaining_total.saturating_sub(dt);
            m.busy_ns = m.busy_ns.saturating_add(dt);
            let (pid, pslot) = (m.pid, m.proc_slot as usize);
            if let Some(p) = self.procs.get_mut(pslot) {
                p.busy_ns = p.busy_ns.saturating_add(dt);
            }
            self.push_segment(pid, c as u32, t0, t1);
        }
        self.settle(c, t1);
    }
}

/// A locked device: the state plus the queues of all contexts
/// (`MAX_CONTEXTS * depth` items, context c's queue at `c * depth`).
pub struct Core<'a> {
    pub st: &'a mut State,
    queues: &'a mut [Item],
    depth: usize,
}

impl<'a> Core<'a> {
    pub fn new(st: &'a mut State, queues: &'a mut [Item]) -> Core<'a> {
        let fit = (queues.len() / MAX_CONTEXTS).max(1);
        let depth = (st.cfg.queue_depth.clamp(1, MAX_QUEUE_DEPTH) as usize).min(fit);
        Core { st, queues, depth }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn timing(&self) -> Timing {
        Timing {
            timeslice_ns: self.st.cfg.timeslice_ns,
            switch_ns: self.st.cfg.switch_ns,
        }
    }

    fn parts(&mut self) -> (&mut Sched, Timing, RealWork<'_>) {
        let timing = self.timing();
        let State {
            sched,
            ready_mask,
            segm,
            procs,
            ctxs,
            segs,
            events,
            ..
        } = &mut *self.st;
        (
            sched,
            timing,
            RealWork {
                ctxs,
                procs,
                queues: &mut *self.queues,
                depth: self.depth,
                segm,
                segs,
                events,
                ready: ready_mask,
            },
        )
    }

    /// Model time the device has been advanced to.
    pub fn now(&self) -> u64 {
        self.st.sched.now
    }

    /// Advances the model to `now` (see [`sched::advance`]).
    pub fn advance(&mut self, now: u64) {
        let (s, tm, mut w) = self.parts();
        sched::advance(s, tm, &mut w, now);
    }

    fn ctx_checked(&self, c: usize, gen: u64) -> Result<&CtxMeta, CtxFault> {
        match self.st.ctxs.get(c) {
            Some(m) if m.generation == gen && m.state != C_FREE => Ok(m),
            _ => Err(CtxFault::Gone),
        }
    }

    // ----- processes and memory -----

    /// The slot of the live process (pid, start_time), registering it if
    /// needed; true when it was registered now. `hint` is checked first (the
    /// caller only passes a slot it registered or verified). A live slot
    /// with the same pid but a different start time belongs to a dead
    /// process whose pid was reused, and one with the same identity whose
    /// image lock nobody holds (`image_held` says false) to the image this
    /// process exec'd from: both are marked dead. Free slots are used
    /// first; when the table is full, the slot of the process that died
    /// longest ago is reused.
    pub fn process_slot(
        &mut self,
        hint: usize,
        pid: u32,
        start_time: u64,
        now: u64,
        image_held: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(usize, bool), Full> {
        let same = |p: &ProcSlot| {
            p.state == P_ALIVE
                && p.pid == pid
                && (p.start_time == start_time || p.start_time == 0 || start_time == 0)
        };
        if self.st.procs.get(hint).is_some_and(same) {
            return Ok((hint, false));
        }
        let mut stale = Vec::new();
        let mut found = None;
        for (i, p) in self.st.procs.iter().enumerate() {
            if same(p) && (p.image_locked == 0 || image_held(i)) {
                found = Some(i);
                break;
            }
            if p.state == P_ALIVE && p.pid == pid {
                stale.push(i);
            }
        }
        if let Some(i) = found {
            return Ok((i, false));
        }
        for i in stale {
            self.mark_dead(i, now);
        }
        let slot = match self.st.procs.iter().position(|p| p.state == P_FREE) {
            Some(i) => i,
            None => self
                .st
                .procs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state != P_ALIVE)
                .min_by_key(|(_, p)| p.died_ns)
                .map(|(i, _)| i)
                .ok_or(Full)?,
        };
        let generation = self.st.live.next_generation;
        self.st.live.next_generation = generation.saturating_add(1);
        if let Some(p) = self.st.procs.get_mut(slot) {
            *p = ProcSlot {
                state: P_ALIVE,
                pid,
                start_time,
                generation,
                registered_ns: now,
                ..ProcSlot::default()
            };
        }
        Ok((slot, true))
    }

    /// `process_slot` for tests: every image lock counts as held.
    #[cfg(test)]
    pub fn register_for_test(
        &mut self,
        hint: usize,
        pid: u32,
        start_time: u64,
        now: u64,
    ) -> Result<usize, Full> {
        self.process_slot(hint, pid, start_time, now, &mut |_| true)
            .map(|r| r.0)
    }

    /// Records that the image registered in `slot` holds its image lock.
    pub fn set_image_locked(&mut self, slot: usize) {
        if let Some(p) = self.st.procs.get_mut(slot) {
            p.image_locked = 1;
        }
    }

    /// Charges `bytes` to process slot `slot`: all or nothing.
    pub fn mem_charge(&mut self, slot: usize, bytes: u64) -> Result<(), Full> {
        let total = self.st.cfg.mem_total;
        let used = self.st.ledger.used;
        let Some(p) = self.st.procs.get_mut(slot) else {
            return Err(Full);
        };
        if p.state != P_ALIVE || bytes > total.saturating_sub(used) {
            return Err(Full);
        }
        p.used = p.used.saturating_add(bytes);
        p.peak = p.peak.max(p.used);
        let l = &mut self.st.ledger;
        l.used = used + bytes;
        l.peak = l.peak.max(l.used);
        Ok(())
    }

    /// Returns up to `bytes` charged by process slot `slot` (never more than
    /// it holds).
    pub fn mem_uncharge(&mut self, slot: usize, bytes: u64) {
        let Some(p) = self.st.procs.get_mut(slot) else {
            return;
        };
        let b = bytes.min(p.used);
        p.used -= b;
        self.st.ledger.used = self.st.ledger.used.saturating_sub(b);
    }

    /// The process in `slot` died (the caller advanced to `now` first): its
    /// memory is released, its contexts' pending work discarded; its stats
    /// are kept with `alive = false`.
    pub fn mark_dead(&mut self, slot: usize, now: u64) {
        let Some(p) = self.st.procs.get_mut(slot) else {
            return;
        };
        if p.state != P_ALIVE {
            return;
        }
        p.state = P_DEAD;
        p.died_ns = now;
        let used = p.used;
        p.used = 0;
        self.st.ledger.used = self.st.ledger.used.saturating_sub(used);
        for (c, m) in self.st.ctxs.iter_mut().enumerate() {
            if m.proc_slot as usize == slot && (m.state == C_OPEN || m.state == C_CLOSED) {
                m.state = C_DEAD;
                m.ended_ns = now;
                m.len = 0;
                m.remaining_total = 0;
                self.st.ready_mask &= !(1u64 << c);
            }
        }
        // The resident may have lost its work: switch or idle now.
        self.advance(now);
    }

    /// Whether a periodic liveness check is due (at most one per
    /// [`LIVENESS_PERIOD_NS`]); when it is, the check is claimed for `now`.
    pub fn liveness_due(&mut self, now: u64) -> bool {
        if now
            < self
                .st
                .live
                .last_check_ns
                .saturating_add(LIVENESS_PERIOD_NS)
        {
            return false;
        }
        self.st.live.last_check_ns = now;
        true
    }

    /// Collects the live processes to check (`full`: compare every start
    /// time; else only one, rolling). `me` (the caller) is skipped.
    pub fn liveness_candidates(&mut self, full: bool, me: u32, out: &mut Candidates) {
        // Rolling start-time check: one live process per periodic round.
        let n = MAX_PROCESSES;
        let from = self.st.live.cursor as usize % n;
        let rolling = (1..=n).map(|k| (from + k) % n).find(|&i| {
            self.st
                .procs
                .get(i)
                .is_some_and(|p| p.state == P_ALIVE && p.pid != me)
        });
        if let Some(i) = rolling {
            self.st.live.cursor = i as u32;
        }
        for (i, p) in self.st.procs.iter().enumerate() {
            if p.state == P_ALIVE && p.pid != me {
                out.push(Candidate {
                    slot: i as u32,
                    pid: p.pid,
                    start_time: p.start_time,
                    check_start: full || Some(i) == rolling,
                    image_locked: p.image_locked != 0,
                });
            }
        }
    }

    /// Marks dead each candidate whose slot still holds the same process.
    pub fn reap(&mut self, dead: &[Candidate], now: u64) {
        self.advance(now);
        for d in dead {
            let same = self.st.procs.get(d.slot as usize).is_some_and(|p| {
                p.state == P_ALIVE && p.pid == d.pid && p.start_time == d.start_time
            });
            if same {
                self.mark_dead(d.slot as usize, now);
            }
        }
    }

    // ----- contexts -----

    /// Claims a context for process slot `pslot`: a never-used slot first,
    /// else the one that ended longest ago (done or dead). Returns (index,
    /// generation).
    pub fn create_context(&mut self, pslot: usize, now: u64) -> Result<(usize, u64), Full> {
        let pid = self
            .st
            .procs
            .get(pslot)
            .filter(|p| p.state == P_ALIVE)
            .ok_or(Full)?
            .pid;
        let c = match self.st.ctxs.iter().position(|m| m.state == C_FREE) {
            Some(c) => c,
            None => self
                .st
                .ctxs
                .iter()
                .enumerate()
                .filter(|(_, m)| m.state == C_DONE || m.state == C_DEAD)
                .min_by_key(|(_, m)| m.ended_ns)
                .map(|(c, _)| c)
                .ok_or(Full)?,
        };
        if self.st.sched.resident == c as u32 {
            self.st.sched.resident = sched::GONE;
        }
        let generation = self.st.live.next_generation;
        self.st.live.next_generation = generation.saturating_add(1);
        self.st.ready_mask &= !(1u64 << c);
        if let Some(m) = self.st.ctxs.get_mut(c) {
            *m = CtxMeta {
                state: C_OPEN,
                proc_slot: pslot as u32,
                pid,
                generation,
                created_ns: now,
                ..CtxMeta::default()
            };
        }
        // Event stamps are reset when a slot is allocated (alloc_event).
        Ok((c, generation))
    }

    /// The owner dropped the context: already queued work still runs; the
    /// slot becomes reusable once drained.
    pub fn close_context(&mut self, c: usize, gen: u64, now: u64) {
        if let Some(m) = self.st.ctxs.get_mut(c) {
            if m.generation == gen && m.state == C_OPEN {
                if m.len == 0 {
                    m.state = C_DONE;
                    m.ended_ns = now;
                } else {
                    m.state = C_CLOSED;
                }
            }
        }
    }

    /// Enqueues `work` on context `c` at time `now` (the model is advanced to
    /// `now` first, so nothing is inserted in the past), then starts it if the
    /// device can. A copy behind no pending work completes at `now`; a
    /// marker needs its context to be resident, like a kernel.
    pub fn enqueue(
        &mut self,
        c: usize,
        gen: u64,
        work: Work,
        event: u32,
        now: u64,
    ) -> Result<Seq, CtxFault> {
        self.advance(now);
        let depth = self.depth;
        let m = self.ctx_checked(c, gen)?;
        if m.state != C_OPEN {
            return Err(CtxFault::Gone);
        }
        if m.len as usize >= depth {
            return Err(CtxFault::QueueFull);
        }
        let kind = kind_code(work.kind);
        // Kernels, graphs and markers are executed by the context's channel,
        // which runs only while the context is resident: they need the
        // device (a marker, or a kernel of duration 0, for MIN_DEVICE_NS).
        // Copies run on the copy engines, which are not modelled.
        let on_device = matches!(
            work.kind,
            WorkKind::Kernel | WorkKind::Graph | WorkKind::Marker
        );
        let dur = if on_device {
            work.duration_ns.max(MIN_DEVICE_NS)
        } else {
            0
        };
        let pos = m.len as usize;
        let (_, _, mut w) = self.parts();
        match w.item(c, pos) {
            Some(slot) => {
                *slot = Item {
                    remaining_ns: dur,
                    duration_ns: dur,
                    tag: work.tag,
                    kind,
                    event,
                };
            }
            None => return Err(CtxFault::Gone),
        }
        let Some(m) = w.ctxs.get_mut(c) else {
            return Err(CtxFault::Gone);
        };
        m.len += 1;
        m.last_submitted = m.completed.saturating_add(m.len as u64);
        m.remaining_total = m.remaining_total.saturating_add(dur);
        let seq = m.last_submitted;
        w.settle(c, now);
        self.advance(now);
        Ok(seq)
    }

    pub fn completed(&self, c: usize, gen: u64) -> Result<Seq, CtxFault> {
        Ok(self.ctx_checked(c, gen)?.completed)
    }

    pub fn last_submitted(&self, c: usize, gen: u64) -> Result<Seq, CtxFault> {
        Ok(self.ctx_checked(c, gen)?.last_submitted)
    }

    /// Pending items of context c.
    pub fn pending(&self, c: usize, gen: u64) -> Result<u64, CtxFault> {
        Ok(self.ctx_checked(c, gen)?.len as u64)
    }

    /// Whether `seq` has completed (the caller advanced first).
    pub fn is_complete(&self, c: usize, gen: u64, seq: Seq) -> Result<bool, CtxFault> {
        let m = self.ctx_checked(c, gen)?;
        if seq <= m.completed {
            Ok(true)
        } else if seq > m.last_submitted {
            Err(CtxFault::InvalidSeq)
        } else if m.state == C_DEAD {
            Err(CtxFault::Lost)
        } else {
            Ok(false)
        }
    }

    /// What a waiter for `seq` should do: done, or sleep until the projected
    /// completion (a lower bound: new work elsewhere only delays it), capped
    /// at `horizon`, and never less than 1 us ahead (no spinning).
    pub fn wait_plan(
        &mut self,
        c: usize,
        gen: u64,
        seq: Seq,
        horizon: u64,
    ) -> Result<Plan, CtxFault> {
        if self.is_complete(c, gen, seq)? {
            return Ok(Plan::Done);
        }
        let now = self.now();
        let (completed, len) = {
            let m = self.ctx_checked(c, gen)?;
            (m.completed, m.len as u64)
        };
        let k = seq.saturating_sub(completed).min(len) as usize;
        let mut rem = [0u64; MAX_CONTEXTS];
        let mask = self.st.ready_mask;
        for (i, r) in rem.iter_mut().enumerate() {
            if (mask >> i) & 1 == 1 {
                *r = self.st.ctxs.get(i).map_or(0, |m| m.remaining_total);
            }
        }
        let (s, tm, mut w) = self.parts();
        let mut target = 0u64;
        for i in 0..k {
            target = target.saturating_add(w.item(c, i).map_or(0, |it| it.remaining_ns));
        }
        let at = sched::project(s, tm, &rem, c, target, horizon).unwrap_or(horizon);
        Ok(Plan::SleepUntil(
            at.min(horizon).max(now.saturating_add(1_000)),
        ))
    }

    // ----- events -----

    pub fn alloc_event(&mut self, c: usize, gen: u64) -> Option<u32> {
        self.ctx_checked(c, gen).ok()?;
        let m = self.st.ctxs.get_mut(c)?;
        let (wi, word) = m
            .ev_used
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let bit = (!*word).trailing_zeros();
        *word |= 1u64 << bit;
        let idx = wi * 64 + bit as usize;
        if let Some(ev) = self.st.events.get_mut(c).and_then(|e| e.get_mut(idx)) {
            *ev = EvStamp::default();
        }
        Some(idx as u32)
    }

    /// Whether event slot `idx` of context `c` is allocated.
    pub fn event_allocated(&self, c: usize, idx: u32) -> bool {
        let i = idx as usize;
        self.st
            .ctxs
            .get(c)
            .and_then(|m| m.ev_used.get(i / 64))
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    pub fn free_event(&mut self, c: usize, gen: u64, idx: u32) {
        if self.ctx_checked(c, gen).is_err() {
            return;
        }
        let i = idx as usize;
        if let Some(w) = self
            .st
            .ctxs
            .get_mut(c)
            .and_then(|m| m.ev_used.get_mut(i / 64))
        {
            *w &= !(1u64 << (i % 64));
        }
    }

    pub fn record_event(
        &mut self,
        c: usize,
        gen: u64,
        idx: u32,
        now: u64,
    ) -> Result<Seq, CtxFault> {
        self.ctx_checked(c, gen)?;
        if !self.event_allocated(c, idx) {
            return Err(CtxFault::BadEvent);
        }
        let work = Work {
            kind: WorkKind::Marker,
            duration_ns: 0,
            tag: 0,
        };
        self.enqueue(c, gen, work, idx, now)
    }

    /// Completion time of marker `seq` recorded in event slot `idx`, if it
    /// completed and is the slot's latest completed record.
    pub fn event_time(
        &self,
        c: usize,
        gen: u64,
        idx: u32,
        seq: Seq,
    ) -> Result<Option<u64>, CtxFault> {
        let m = self.ctx_checked(c, gen)?;
        if !self.event_allocated(c, idx) {
            return Err(CtxFault::BadEvent);
        }
        if seq > m.completed {
            return Ok(None);
        }
        let ev = self.st.events.get(c).and_then(|e| e.get(idx as usize));
        Ok(ev.filter(|e| e.seq == seq).map(|e| e.time))
    }

    // ----- ground truth -----

    /// Device time the work of `pid` ran within `[from, to)`, from the
    /// device-wide segment ring (binary search, then a scan of the window).
    pub fn busy_between(&self, pid: u32, from: u64, to: u64) -> BusyReport {
        let mut busy = 0u64;
        self.each_run(pid, from, to, |a, b| busy = busy.saturating_add(b - a));
        let retained = self.st.segm.lost_before_ns;
        BusyReport {
            busy_ns: busy,
            complete: from >= retained,
            retained_from_ns: retained,
        }
    }

    /// When the work of `pid` ran within `[from, to)`: its runs, clipped to
    /// the window, in time order (contiguous runs of one context merged).
    pub fn runs_between(&self, pid: u32, from: u64, to: u64) -> RunsReport {
        let mut runs = Vec::new();
        self.each_run(pid, from, to, |a, b| runs.push((a, b)));
        let retained = self.st.segm.lost_before_ns;
        RunsReport {
            runs,
            complete: from >= retained,
            retained_from_ns: retained,
        }
    }

    /// Calls `f(start, end)` for each non-empty run of `pid` within
    /// `[from, to)`, clipped to it, in time order.
    fn each_run(&self, pid: u32, from: u64, to: u64, mut f: impl FnMut(u64, u64)) {
        let n = SEGMENTS;
        let len = (self.st.segm.len as usize).min(n);
        let next = self.st.segm.next as usize % n;
        let oldest = (next + n - len) % n;
        let at = |i: usize| {
            self.st
                .segs
                .get((oldest + i) % n)
                .copied()
                .unwrap_or_default()
        };
        // First segment ending after `from`; segments are in time order.
        let (mut lo, mut hi) = (0usize, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid).end <= from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in lo..len {
            let s = at(i);
            if s.start >= to {
                break;
            }
            if s.pid == pid {
                let a = s.start.max(from);
                let b = s.end.min(to);
                if b > a {
                    f(a, b);
                }
            }
        }
    }

    /// The memory ledger and per-process totals.
    pub fn snapshot(&self) -> Snapshot {
        let processes = self
            .st
            .procs
            .iter()
            .filter(|p| p.state != P_FREE)
            .map(|p| ProcessStats {
                pid: p.pid,
                alive: p.state == P_ALIVE,
                mem_used: p.used,
                mem_peak: p.peak,
                busy_ns: p.busy_ns,
                items_completed: p.items_completed,
            })
            .collect();
        Snapshot {
            now_ns: self.st.sched.now,
            mem_total: self.st.cfg.mem_total,
            mem_used: self.st.ledger.used,
            mem_peak: self.st.ledger.peak,
            context_switches: self.st.sched.context_switches,
            processes,
        }
    }

    /// Everything a monitor may want: the snapshot, device-wide time totals,
    /// and the contexts.
    pub fn details(&self) -> DeviceDetails {
        let s = &self.st.sched;
        let contexts = self
            .st
            .ctxs
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state != C_FREE)
            .map(|(i, m)| ContextStats {
                index: i as u32,
                pid: m.pid,
                state: match m.state {
                    C_OPEN => "open",
                    C_CLOSED => "closed",
                    C_DONE => "done",
                    C_DEAD => "dead",
                    _ => "invalid",
                },
                submitted: m.last_submitted,
                completed: m.completed,
                pending: m.len as u64,
                busy_ns: m.busy_ns,
            })
            .collect();
        DeviceDetails {
            snapshot: self.snapshot(),
            timeslice_ns: self.st.cfg.timeslice_ns,
            switch_ns: self.st.cfg.switch_ns,
            queue_depth: self.depth as u32,
            busy_ns: s.busy_ns,
            idle_ns: s.idle_ns,
            switching_ns: s.switching_ns,
            resident: (s.resident as usize)
                .lt(&MAX_CONTEXTS)
                .then_some(s.resident),
            retained_from_ns: self.st.segm.lost_before_ns,
            contexts,
        }
    }

    // ----- repair -----

    /// Brings derived state back in line after a process died holding the
    /// lock (or the file was damaged): indices into range, pending counts and
    /// remaining totals recomputed from the queues, the ledger recomputed from
    /// the process slots, ready bits recomputed, scheduler times no later
    /// than `now` (a model time in the future would freeze the device).
    pub fn repair(&mut self, now: u64) {
        let depth = self.depth;
        {
            let sw = self.st.cfg.switch_ns;
            let s = &mut self.st.sched;
            s.now = s.now.min(now);
            s.slice_start = s.slice_start.min(s.now);
            s.switch_end = s.switch_end.min(s.now.saturating_add(sw));
        }
        self.st.cfg.queue_depth = depth as u32;
        self.st.cfg.timeslice_ns = self.st.cfg.timeslice_ns.max(sched::MIN_TIMESLICE_NS);
        let mut used = 0u64;
        for p in self.st.procs.iter_mut() {
            if p.state > P_DEAD {
                p.state = P_DEAD;
            }
            if p.state == P_ALIVE {
                used = used.saturating_add(p.used);
            } else {
                p.used = 0;
            }
        }
        self.st.ledger.used = used;
        self.st.ledger.peak = self.st.ledger.peak.max(used);
        let now = self.st.sched.now;
        self.st.ready_mask = 0;
        for c in 0..MAX_CONTEXTS {
            let (_, _, mut w) = self.parts();
            let Some(m) = w.ctxs.get_mut(c) else { continue };
            if m.state > C_DEAD {
                m.state = C_DEAD;
            }
            m.head %= depth as u32;
            if m.state == C_OPEN || m.state == C_CLOSED {
                m.len = m.len.min(depth as u32);
            } else {
                m.len = 0;
            }
            m.last_submitted = m.completed.saturating_add(m.len as u64);
            let len = m.len as usize;
            let mut total = 0u64;
            for i in 0..len {
                total = total.saturating_add(w.item(c, i).map_or(0, |it| it.remaining_ns));
            }
            if let Some(m) = w.ctxs.get_mut(c) {
                m.remaining_total = total;
            }
            w.settle(c, now);
        }
        let s = &mut self.st.sched;
        let n = SEGMENTS as u32;
        self.st.segm.next %= n;
        self.st.segm.len = self.st.segm.len.min(n);
        if s.phase > sched::PHASE_SWITCHING
            || (s.phase == sched::PHASE_SWITCHING && s.switch_target as usize >= MAX_CONTEXTS)
        {
            s.phase = sched::PHASE_IDLE;
        }
        if (s.resident as usize) >= MAX_CONTEXTS && s.resident != sched::NONE {
            s.resident = sched::GONE;
        }
    }
}

/// Heap-allocated state for tests (the real one lives in the shared file).
#[cfg(test)]
pub mod testing {
    use super::*;

    pub struct Sim {
        pub st: Box<State>,
        pub q: Vec<Item>,
    }

    impl Sim {
        pub fn new(cfg: SimCfg, t0: u64) -> Sim {
            let mut st = crate::shm::zeroed_state();
            st.init(cfg, t0);
            let depth = st.cfg.queue_depth as usize;
            Sim {
                st,
                q: vec![Item::default(); MAX_CONTEXTS * depth],
            }
        }
        pub fn core(&mut self) -> Core<'_> {
            Core::new(&mut self.st, &mut self.q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Sim;
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const TS: u64 = 1024 * US;
    const SW: u64 = 90 * US;

    fn cfg() -> SimCfg {
        SimCfg {
            mem_total: 1 << 30,
            timeslice_ns: TS,
            switch_ns: SW,
            queue_depth: 64,
            _pad: 0,
        }
    }

    fn kernel(d: u64) -> Work {
        Work {
            kind: WorkKind::Kernel,
            duration_ns: d,
            tag: 7,
        }
    }
    fn marker() -> Work {
        Work {
            kind: WorkKind::Marker,
            duration_ns: 0,
            tag: 0,
        }
    }

    /// A process with one context.
    fn tenant(sim: &mut Sim, pid: u32, now: u64) -> (usize, u64) {
        let mut c = sim.core();
        let p = c.register_for_test(0, pid, 1000 + pid as u64, now).unwrap();
        c.create_context(p, now).unwrap()
    }

    /// Completion time of `seq` by stepping the model 1 us at a time
    /// (independent of the projection code).
    fn completion_by_stepping(sim: &mut Sim, (c, g): (usize, u64), seq: Seq, limit: u64) -> u64 {
        let mut core = sim.core();
        let mut t = core.now().next_multiple_of(US);
        while t <= limit {
            core.advance(t);
            if core.is_complete(c, g, seq).unwrap() {
                return t;
            }
            t += US;
        }
        panic!("seq {seq} not complete by {limit}");
    }

    #[test]
    fn lone_context_runs_back_to_back_without_switches() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let mut core = sim.core();
        // 5 kernels of 700 us: 3.5 ms spans several timeslices.
        let seqs: Vec<Seq> = (0..5)
            .map(|_| {
                core.enqueue(a.0, a.1, kernel(700 * US), NO_EVENT, 0)
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        for (i, &s) in seqs.iter().enumerate() {
            let done = 700 * US * (i as u64 + 1);
            core.advance(done - 1);
            assert!(!core.is_complete(a.0, a.1, s).unwrap());
            core.advance(done);
            assert!(
                core.is_complete(a.0, a.1, s).unwrap(),
                "kernel {s} completes at exactly {done}"
            );
        }
        core.advance(10 * MS);
        let s = core.st.sched;
        assert_eq!(s.context_switches, 0);
        assert_eq!(s.switching_ns, 0);
        assert_eq!(s.busy_ns, 3500 * US);
        assert_eq!(s.idle_ns, 10 * MS - 3500 * US);
        // One merged segment.
        assert_eq!(core.st.segm.len, 1);
        let r = core.busy_between(10, 0, 10 * MS);
        assert_eq!(r.busy_ns, 3500 * US);
        assert!(r.complete);
        assert_eq!(core.busy_between(10, MS, 2 * MS).busy_ns, MS);
    }

    #[test]
    fn idle_resident_gets_work_again_without_switch_cost() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let b = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        let s1 = core
            .enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 0)
            .unwrap();
        core.advance(500 * US);
        assert!(core.is_complete(a.0, a.1, s1).unwrap());
        // Device idle, A still resident: A's next kernel starts at once.
        let s2 = core
            .enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 500 * US)
            .unwrap();
        core.advance(600 * US);
        assert!(core.is_complete(a.0, a.1, s2).unwrap());
        // B arrives on an idle device whose resident is A: pays one switch.
        let s3 = core
            .enqueue(b.0, b.1, kernel(100 * US), NO_EVENT, MS)
            .unwrap();
        core.advance(MS + SW + 100 * US - 1);
        assert!(!core.is_complete(b.0, b.1, s3).unwrap());
        core.advance(MS + SW + 100 * US);
        assert!(core.is_complete(b.0, b.1, s3).unwrap());
        assert_eq!(core.st.sched.context_switches, 1);
    }

    /// Keeps both contexts' queues non-empty from 0 to `end` by topping them
    /// up every `step`; returns (busy A, busy B, switching).
    fn saturate(ts: u64, sw: u64, end: u64) -> (u64, u64, u64, u64) {
        let mut c = cfg();
        c.timeslice_ns = ts;
        c.switch_ns = sw;
        let mut sim = Sim::new(c, 0);
        let a = tenant(&mut sim, 10, 0);
        let b = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        let mut t = 0;
        while t < end {
            for x in [a, b] {
                while core.pending(x.0, x.1).unwrap() < 8 {
                    core.enqueue(x.0, x.1, kernel(300 * US), NO_EVENT, t)
                        .unwrap();
                }
            }
            t += 250 * US;
            core.advance(t);
        }
        core.advance(end);
        let ra = core.busy_between(10, 0, end).busy_ns;
        let rb = core.busy_between(11, 0, end).busy_ns;
        let s = core.st.sched;
        assert_eq!(s.busy_ns + s.switching_ns + s.idle_ns, end);
        assert_eq!(ra + rb, s.busy_ns);
        (ra, rb, s.switching_ns, s.idle_ns)
    }

    #[test]
    fn two_saturating_contexts_split_evenly_and_lose_the_switch_share() {
        let end = 2_000 * MS;
        let (a, b, sw, idle) = saturate(TS, SW, end);
        assert_eq!(idle, 0);
        let share_a = a as f64 / end as f64;
        let share_b = b as f64 / end as f64;
        let expected = TS as f64 / (TS + SW) as f64 / 2.0;
        assert!(
            (share_a - expected).abs() < 0.002,
            "A {share_a} vs {expected}"
        );
        assert!(
            (share_b - expected).abs() < 0.002,
            "B {share_b} vs {expected}"
        );
        let loss = sw as f64 / end as f64;
        let expected_loss = SW as f64 / (TS + SW) as f64; // ~8.1%
        assert!(
            (loss - expected_loss).abs() < 0.002,
            "loss {loss} vs {expected_loss}"
        );
        assert!((0.075..0.085).contains(&loss));
        // Another timeslice: the same law.
        let (a, b, sw, _) = saturate(2 * MS, 200 * US, end);
        let exp = 2.0 / 2.2;
        assert!(((a + b) as f64 / end as f64 - exp).abs() < 0.002);
        assert!((sw as f64 / end as f64 - 0.2 / 2.2).abs() < 0.002);
        assert!((a as f64 - b as f64).abs() / (end as f64) < 0.002);
    }

    #[test]
    fn preemption_mid_kernel_keeps_the_remaining_time() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let b = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        // A: one 3 ms kernel. B arrives at 0.5 ms with a 2 ms kernel.
        let sa = core.enqueue(a.0, a.1, kernel(3 * MS), NO_EVENT, 0).unwrap();
        let sb = core
            .enqueue(b.0, b.1, kernel(2 * MS), NO_EVENT, 500 * US)
            .unwrap();
        // Timeline: A [0, TS), switch, B [TS+SW, 2TS+SW), switch, A
        // [2TS+2SW, 3TS+2SW) (2 TS of A done), switch, B finishes its
        // remaining 2ms-TS, switch, A finishes its remaining 3ms-2TS.
        let b_rest = 2 * MS - TS;
        let b_done = 3 * TS + 3 * SW + b_rest;
        let a_done = b_done + SW + (3 * MS - 2 * TS);
        core.advance(TS);
        let (_, _, w) = core.parts();
        assert_eq!(
            w.head_remaining(a.0),
            3 * MS - TS,
            "A keeps the rest of its kernel"
        );
        core.advance(b_done - 1);
        assert!(!core.is_complete(b.0, b.1, sb).unwrap());
        core.advance(b_done);
        assert!(core.is_complete(b.0, b.1, sb).unwrap());
        core.advance(a_done - 1);
        assert!(!core.is_complete(a.0, a.1, sa).unwrap());
        core.advance(a_done);
        assert!(core.is_complete(a.0, a.1, sa).unwrap());
        assert_eq!(core.busy_between(10, 0, a_done).busy_ns, 3 * MS);
        assert_eq!(core.busy_between(11, 0, a_done).busy_ns, 2 * MS);
        assert_eq!(core.st.sched.context_switches, 4);
    }

    #[test]
    fn victim_waits_at_most_remaining_slice_plus_switch() {
        // Saturating neighbour N is resident; victim V submits a 50 us kernel
        // at various points of N's slice.
        for offset in [0, 1, 100 * US, 512 * US, TS - 1, TS] {
            let mut sim = Sim::new(cfg(), 0);
            let n = tenant(&mut sim, 10, 0);
            let v = tenant(&mut sim, 11, 0);
            let mut core = sim.core();
            for _ in 0..20 {
                core.enqueue(n.0, n.1, kernel(MS), NO_EVENT, 0).unwrap();
            }
            // N's slices renew while it is alone: the slice containing `at`
            // started at a multiple of TS.
            let at = 5 * TS + offset;
            core.advance(at);
            let s = core
                .enqueue(v.0, v.1, kernel(50 * US), NO_EVENT, at)
                .unwrap();
            // A slice end at exactly `at` was already renewed before V arrived.
            let slice_end = (at / TS + 1) * TS;
            let expected = slice_end + SW + 50 * US;
            let done = completion_by_stepping(&mut sim, v, s, 20 * MS);
            assert_eq!(done, expected, "offset {offset}");
            let latency = done - at;
            assert!(latency <= (slice_end - at) + SW + 50 * US);
            assert!(latency <= TS + SW + 50 * US);
        }
        // With an idle neighbour (resident but without work): no wait at all.
        let mut sim = Sim::new(cfg(), 0);
        let n = tenant(&mut sim, 10, 0);
        let v = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        core.enqueue(n.0, n.1, kernel(MS), NO_EVENT, 0).unwrap();
        core.advance(2 * MS);
        let s1 = core
            .enqueue(v.0, v.1, kernel(50 * US), NO_EVENT, 2 * MS)
            .unwrap();
        // Loading V costs one switch (N was resident), then V runs.
        let done = completion_by_stepping(&mut sim, v, s1, 10 * MS);
        assert_eq!(done, 2 * MS + SW + 50 * US);
        // V now resident and alone: its next kernels run without any wait.
        let mut core = sim.core();
        let t = 3 * MS;
        core.advance(t);
        let s2 = core
            .enqueue(v.0, v.1, kernel(50 * US), NO_EVENT, t)
            .unwrap();
        assert_eq!(
            completion_by_stepping(&mut sim, v, s2, 10 * MS),
            t + 50 * US
        );
    }

    #[test]
    fn victim_latency_against_a_saturating_neighbour_in_a_loop() {
        // A victim doing kernel + sync in a loop beside a saturating
        // neighbour waits about one slice + switch per kernel, as on hardware.
        // Worst case: it submits while the switch back to the neighbour is
        // in progress, so it waits for that switch, a full slice and the
        // switch back.
        let mut sim = Sim::new(cfg(), 0);
        let n = tenant(&mut sim, 10, 0);
        let v = tenant(&mut sim, 11, 0);
        let mut t = 0;
        let mut worst = 0;
        for i in 0..200 {
            let mut core = sim.core();
            core.advance(t);
            while core.pending(n.0, n.1).unwrap() < 16 {
                core.enqueue(n.0, n.1, kernel(200 * US), NO_EVENT, t)
                    .unwrap();
            }
            let s = core
                .enqueue(v.0, v.1, kernel(20 * US), NO_EVENT, t)
                .unwrap();
            let done = completion_by_stepping(&mut sim, v, s, t + 10 * MS);
            let lat = done - t;
            worst = worst.max(lat);
            assert!(lat <= SW + TS + SW + 20 * US, "iteration {i}: {lat}");
            t = done + 30 * US; // host think time
        }
        assert!(
            worst > TS / 2,
            "a busy neighbour does inflate the victim's latency: {worst}"
        );
    }

    #[test]
    fn fifo_order_and_marker_times() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let mut core = sim.core();
        let e1 = core.alloc_event(a.0, a.1).unwrap();
        let e2 = core.alloc_event(a.0, a.1).unwrap();
        let e0 = core.alloc_event(a.0, a.1).unwrap();
        assert_ne!(e1, e2);
        // A marker on an empty queue of the resident context takes its 1 ns at once.
        let m0 = core.record_event(a.0, a.1, e0, 5 * US).unwrap();
        assert_eq!(core.event_time(a.0, a.1, e0, m0).unwrap(), None);
        core.advance(5 * US + MIN_DEVICE_NS);
        assert_eq!(
            core.event_time(a.0, a.1, e0, m0).unwrap(),
            Some(5 * US + MIN_DEVICE_NS)
        );
        let k1 = core
            .enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 10 * US)
            .unwrap();
        let m1 = core.record_event(a.0, a.1, e1, 10 * US).unwrap();
        let c1 = core
            .enqueue(
                a.0,
                a.1,
                Work {
                    kind: WorkKind::Copy,
                    duration_ns: 999,
                    tag: 0,
                },
                NO_EVENT,
                10 * US,
            )
            .unwrap();
        let k2 = core
            .enqueue(a.0, a.1, kernel(50 * US), NO_EVENT, 10 * US)
            .unwrap();
        let m2 = core.record_event(a.0, a.1, e2, 10 * US).unwrap();
        assert_eq!((k1, m1, c1, k2, m2), (2, 3, 4, 5, 6));
        assert_eq!(core.event_time(a.0, a.1, e1, m1).unwrap(), None);
        core.advance(110 * US);
        assert!(!core.is_complete(a.0, a.1, m1).unwrap());
        core.advance(110 * US + MIN_DEVICE_NS);
        // The marker right behind the kernel, then the copy behind it.
        assert!(core.is_complete(a.0, a.1, c1).unwrap());
        assert!(!core.is_complete(a.0, a.1, k2).unwrap());
        assert_eq!(
            core.event_time(a.0, a.1, e1, m1).unwrap(),
            Some(110 * US + MIN_DEVICE_NS)
        );
        core.advance(MS);
        assert_eq!(
            core.event_time(a.0, a.1, e2, m2).unwrap(),
            Some(160 * US + 2 * MIN_DEVICE_NS)
        );
        // Re-recording an event: the latest record wins.
        let m3 = core.record_event(a.0, a.1, e2, MS).unwrap();
        core.advance(MS + MIN_DEVICE_NS);
        assert_eq!(
            core.event_time(a.0, a.1, e2, m3).unwrap(),
            Some(MS + MIN_DEVICE_NS)
        );
        assert_eq!(core.event_time(a.0, a.1, e2, m2).unwrap(), None);
        // Unallocated slots are refused.
        core.free_event(a.0, a.1, e1);
        assert_eq!(core.record_event(a.0, a.1, e1, MS), Err(CtxFault::BadEvent));
        assert_eq!(core.st.ctxs[a.0].items_completed, 7);
        assert_eq!(core.is_complete(a.0, a.1, 99), Err(CtxFault::InvalidSeq));
    }

    #[test]
    fn markers_wait_for_the_device_copies_do_not() {
        // While a neighbour holds the device, an event record on an empty
        // queue is stamped only when its context gets the device (after the
        // neighbour's slice and a switch), as a real channel's timestamp
        // is; a copy completes at once.
        let mut sim = Sim::new(cfg(), 0);
        let n = tenant(&mut sim, 10, 0);
        let v = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        core.enqueue(n.0, n.1, kernel(5 * MS), NO_EVENT, 0).unwrap();
        let c = core
            .enqueue(
                v.0,
                v.1,
                Work {
                    kind: WorkKind::Copy,
                    duration_ns: 0,
                    tag: 0,
                },
                NO_EVENT,
                100 * US,
            )
            .unwrap();
        assert!(core.is_complete(v.0, v.1, c).unwrap());
        let m = core
            .enqueue(v.0, v.1, marker(), NO_EVENT, 100 * US)
            .unwrap();
        assert!(!core.is_complete(v.0, v.1, m).unwrap());
        let slice = cfg().timeslice_ns;
        let switch = cfg().switch_ns;
        core.advance(slice + switch);
        assert!(!core.is_complete(v.0, v.1, m).unwrap());
        core.advance(slice + switch + MIN_DEVICE_NS);
        assert!(core.is_complete(v.0, v.1, m).unwrap());
        // In, and straight back to the neighbour.
        assert_eq!(core.st.sched.context_switches, 2);
    }

    #[test]
    fn full_queue_is_refused_until_work_completes() {
        let mut c = cfg();
        c.queue_depth = 4;
        let mut sim = Sim::new(c, 0);
        let a = tenant(&mut sim, 10, 0);
        let mut core = sim.core();
        for _ in 0..4 {
            core.enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 0)
                .unwrap();
        }
        assert_eq!(
            core.enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 0),
            Err(CtxFault::QueueFull)
        );
        // Markers take a queue slot too.
        assert_eq!(
            core.enqueue(a.0, a.1, marker(), NO_EVENT, 50 * US),
            Err(CtxFault::QueueFull)
        );
        // The plan for the head item is its exact completion time.
        assert_eq!(
            core.wait_plan(a.0, a.1, 1, u64::MAX),
            Ok(Plan::SleepUntil(100 * US))
        );
        assert_eq!(
            core.enqueue(a.0, a.1, kernel(100 * US), NO_EVENT, 100 * US),
            Ok(5)
        );
    }

    #[test]
    fn wait_plans_are_exact_lower_bounds() {
        let mut sim = Sim::new(cfg(), 0);
        let n = tenant(&mut sim, 10, 0);
        let v = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        for _ in 0..10 {
            core.enqueue(n.0, n.1, kernel(MS), NO_EVENT, 0).unwrap();
        }
        let at = 300 * US;
        let s = core
            .enqueue(v.0, v.1, kernel(2 * MS), NO_EVENT, at)
            .unwrap();
        // V runs [TS+SW, 2TS+SW), then N a slice, then V's rest.
        let expected = 2 * TS + 2 * SW + TS + SW + (2 * MS - TS);
        let mut t = at;
        let mut wakeups = 0;
        loop {
            core.advance(t);
            match core.wait_plan(v.0, v.1, s, t + 2 * MS).unwrap() {
                Plan::Done => break,
                Plan::SleepUntil(u) => {
                    assert!(u > t);
                    assert!(u <= expected, "a plan never oversleeps the completion");
                    t = u;
                    wakeups += 1;
                }
            }
        }
        assert_eq!(t, expected);
        assert!(wakeups <= 6, "{wakeups} wake-ups");
        // Capped at the horizon.
        let s2 = core
            .enqueue(v.0, v.1, kernel(50 * MS), NO_EVENT, t)
            .unwrap();
        assert_eq!(
            core.wait_plan(v.0, v.1, s2, t + 2 * MS),
            Ok(Plan::SleepUntil(t + 2 * MS))
        );
    }

    #[test]
    fn dead_process_work_is_discarded_and_memory_released() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let b = tenant(&mut sim, 11, 0);
        let mut core = sim.core();
        let pa = core.st.ctxs[a.0].proc_slot as usize;
        core.mem_charge(pa, 100 << 20).unwrap();
        for _ in 0..10 {
            core.enqueue(a.0, a.1, kernel(MS), NO_EVENT, 0).unwrap();
        }
        let sb = core.enqueue(b.0, b.1, kernel(3 * MS), NO_EVENT, 0).unwrap();
        core.advance(500 * US);
        core.mark_dead(pa, 500 * US);
        assert_eq!(core.st.ledger.used, 0);
        assert_eq!(core.is_complete(a.0, a.1, 5), Err(CtxFault::Lost));
        assert_eq!(
            core.enqueue(a.0, a.1, kernel(1), NO_EVENT, 500 * US),
            Err(CtxFault::Gone)
        );
        // B gets the device right away (one switch), A's work never runs again.
        let done = completion_by_stepping(&mut sim, b, sb, 20 * MS);
        assert_eq!(done, 500 * US + SW + 3 * MS);
        let core = sim.core();
        let snap = core.snapshot();
        let pa_stats = snap.processes.iter().find(|p| p.pid == 10).unwrap();
        assert!(!pa_stats.alive);
        assert_eq!(pa_stats.mem_peak, 100 << 20);
        assert_eq!(pa_stats.mem_used, 0);
        assert_eq!(pa_stats.busy_ns, 500 * US);
        assert_eq!(core.busy_between(10, 0, 20 * MS).busy_ns, 500 * US);
    }

    #[test]
    fn ledger_is_all_or_nothing_and_tracks_peaks() {
        let mut c = cfg();
        c.mem_total = 1000;
        let mut sim = Sim::new(c, 0);
        let mut core = sim.core();
        let p1 = core.register_for_test(0, 1, 11, 0).unwrap();
        let p2 = core.register_for_test(0, 2, 22, 0).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(core.register_for_test(p2, 1, 11, 0), Ok(p1));
        core.mem_charge(p1, 600).unwrap();
        assert_eq!(core.mem_charge(p2, 401), Err(Full));
        core.mem_charge(p2, 400).unwrap();
        assert_eq!(core.mem_charge(p2, 1), Err(Full));
        core.mem_uncharge(p1, 5000); // never more than held
        assert_eq!(core.st.ledger.used, 400);
        assert_eq!(core.st.ledger.peak, 1000);
        assert_eq!(core.st.procs[p1].peak, 600);
        assert_eq!(core.mem_charge(p1, u64::MAX), Err(Full));
        // pid reuse: same pid, another start time -> the old one is dead.
        let p1b = core.register_for_test(p1, 1, 99, 5).unwrap();
        assert_ne!(p1b, p1);
        assert_eq!(core.st.procs[p1].state, P_DEAD);
    }

    #[test]
    fn an_image_that_exec_d_is_dead_to_its_successor() {
        let mut sim = Sim::new(cfg(), 0);
        let mut core = sim.core();
        let (old, new) = core
            .process_slot(usize::MAX, 7, 70, 0, &mut |_| true)
            .unwrap();
        assert!(new);
        core.set_image_locked(old);
        core.mem_charge(old, 300).unwrap();
        // The same image (another attachment) finds its slot while the lock is held.
        assert_eq!(
            core.process_slot(usize::MAX, 7, 70, 1, &mut |_| true),
            Ok((old, false))
        );
        // After exec (same pid and start time) the lock is gone: the old
        // image's slot dies with its memory, and the new image gets its own.
        let (fresh, new) = core
            .process_slot(usize::MAX, 7, 70, 2, &mut |s| s != old)
            .unwrap();
        assert!(new);
        assert_ne!(fresh, old);
        assert_eq!(core.st.procs[old].state, P_DEAD);
        assert_eq!(core.st.ledger.used, 0);
        // A slot that never took its lock is not judged by it.
        let (unlocked, _) = core
            .process_slot(usize::MAX, 8, 80, 3, &mut |_| true)
            .unwrap();
        assert_eq!(
            core.process_slot(usize::MAX, 8, 80, 4, &mut |_| false),
            Ok((unlocked, false))
        );
    }

    #[test]
    fn dead_slots_are_reused_oldest_first_only_when_full() {
        let mut sim = Sim::new(cfg(), 0);
        let mut core = sim.core();
        let slots: Vec<usize> = (0..MAX_PROCESSES as u32)
            .map(|pid| core.register_for_test(0, 100 + pid, 1, 0).unwrap())
            .collect();
        assert_eq!(core.register_for_test(0, 5000, 1, 0), Err(Full));
        core.mark_dead(slots[7], 20);
        core.mark_dead(slots[3], 10);
        core.mark_dead(slots[9], 30);
        assert_eq!(core.register_for_test(0, 5001, 1, 40), Ok(slots[3]));
        assert_eq!(core.register_for_test(0, 5002, 1, 40), Ok(slots[7]));
        // Contexts: 64, then reuse of ended ones.
        let p = core.register_for_test(0, 5001, 1, 40).unwrap();
        let ctxs: Vec<(usize, u64)> = (0..MAX_CONTEXTS)
            .map(|_| core.create_context(p, 50).unwrap())
            .collect();
        assert_eq!(core.create_context(p, 50), Err(Full));
        core.close_context(ctxs[5].0, ctxs[5].1, 60);
        let (c, g) = core.create_context(p, 70).unwrap();
        assert_eq!(c, ctxs[5].0);
        assert_ne!(g, ctxs[5].1);
        assert_eq!(
            core.is_complete(ctxs[5].0, ctxs[5].1, 0),
            Err(CtxFault::Gone)
        );
    }

    #[test]
    fn closed_context_drains_before_reuse() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let mut core = sim.core();
        let s = core.enqueue(a.0, a.1, kernel(MS), NO_EVENT, 0).unwrap();
        core.close_context(a.0, a.1, 10);
        assert_eq!(core.st.ctxs[a.0].state, C_CLOSED);
        core.advance(MS);
        assert!(core.is_complete(a.0, a.1, s).unwrap());
        assert_eq!(core.st.ctxs[a.0].state, C_DONE);
        assert_eq!(core.st.sched.busy_ns, MS);
    }

    #[test]
    fn busy_between_reports_retention() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let mut core = sim.core();
        // Separate segments (idle gaps): overflow the ring.
        let n = SEGMENTS as u64 + 10;
        for i in 0..n {
            let t = i * 10 * US;
            core.enqueue(a.0, a.1, kernel(5 * US), NO_EVENT, t).unwrap();
            core.advance(t + 5 * US);
        }
        assert_eq!(core.st.segm.len as usize, SEGMENTS);
        let r = core.busy_between(10, 0, n * 10 * US);
        assert!(!r.complete);
        assert_eq!(r.retained_from_ns, 9 * 10 * US + 5 * US);
        assert_eq!(r.busy_ns, SEGMENTS as u64 * 5 * US);
        let r = core.busy_between(10, 100 * 10 * US, 200 * 10 * US + 2 * US);
        assert!(r.complete);
        assert_eq!(r.busy_ns, 100 * 5 * US + 2 * US);
        assert_eq!(core.busy_between(99, 0, n * 10 * US).busy_ns, 0);
        let r = core.runs_between(10, 100 * 10 * US + 2 * US, 102 * 10 * US + 2 * US);
        assert!(r.complete);
        assert_eq!(
            r.runs,
            [
                (100 * 10 * US + 2 * US, 100 * 10 * US + 5 * US),
                (101 * 10 * US, 101 * 10 * US + 5 * US),
                (102 * 10 * US, 102 * 10 * US + 2 * US),
            ]
        );
        assert!(!core.runs_between(10, 0, 10 * US).complete);
        assert!(core.runs_between(99, 0, n * 10 * US).runs.is_empty());
    }

    #[test]
    fn repair_recomputes_derived_state_and_survives_garbage() {
        let mut sim = Sim::new(cfg(), 0);
        let a = tenant(&mut sim, 10, 0);
        let b = tenant(&mut sim, 11, 0);
        {
            let mut core = sim.core();
            let pa = core.st.ctxs[a.0].proc_slot as usize;
            core.mem_charge(pa, 300).unwrap();
            for _ in 0..3 {
                core.enqueue(a.0, a.1, kernel(MS), NO_EVENT, 0).unwrap();
                core.enqueue(b.0, b.1, kernel(MS), NO_EVENT, 0).unwrap();
            }
            // A crash mid-update: derived values wrong.
            core.st.ledger.used = 12345;
            core.st.ctxs[a.0].remaining_total = 1;
            core.st.ready_mask = 0;
            core.repair(0);
            assert_eq!(core.st.ledger.used, 300);
            assert_eq!(core.st.ctxs[a.0].remaining_total, 3 * MS);
            assert_eq!(core.st.ready_mask, (1 << a.0) | (1 << b.0));
            core.advance(20 * MS);
            assert_eq!(core.st.sched.busy_ns, 6 * MS);
        }
        // Garbage everywhere: no panic, no hang, and the device still works.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for m in sim.st.ctxs.iter_mut() {
            m.state = next() as u32 % 7;
            m.head = next() as u32;
            m.len = next() as u32;
            m.proc_slot = next() as u32;
            m.completed = next();
            m.remaining_total = next();
        }
        for it in sim.q.iter_mut() {
            it.remaining_ns = next() % (10 * MS);
            it.event = next() as u32;
        }
        sim.st.sched.phase = 77;
        sim.st.sched.resident = 1000;
        sim.st.sched.switch_target = 999;
        sim.st.sched.switch_end = u64::MAX - 5;
        sim.st.sched.slice_start = u64::MAX - 5;
        sim.st.segm.next = u32::MAX;
        sim.st.segm.len = u32::MAX;
        sim.st.ready_mask = u64::MAX;
        let mut core = sim.core();
        // Without repair first: every operation stays in bounds.
        core.advance(30 * MS);
        let _ = core.busy_between(10, 0, u64::MAX);
        let _ = core.snapshot();
        let _ = core.details();
        for c in 0..MAX_CONTEXTS {
            let g = core.st.ctxs[c].generation;
            let _ = core.wait_plan(c, g, 5, 40 * MS);
            let _ = core.enqueue(c, g, kernel(1), NO_EVENT, 30 * MS);
        }
        core.advance(100 * MS);
        core.repair(100 * MS);
        assert!(core.st.sched.switch_end <= 100 * MS + SW);
        core.advance(200 * MS);
        let p = core.register_for_test(0, 4242, 1, 200 * MS).unwrap();
        let (c, g) = core.create_context(p, 200 * MS).unwrap();
        let s = core.enqueue(c, g, kernel(MS), NO_EVENT, 200 * MS).unwrap();
        core.advance(10_000 * MS);
        assert!(core.is_complete(c, g, s).unwrap());
    }

    #[test]
    fn time_accounting_is_conserved_with_many_contexts() {
        let mut sim = Sim::new(cfg(), 0);
        let ts: Vec<(usize, u64)> = (0..5).map(|i| tenant(&mut sim, 10 + i, 0)).collect();
        let mut core = sim.core();
        let mut t = 0;
        let mut rng: u64 = 12345;
        let mut accepted = 0u64;
        for _ in 0..2000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let who = ts[(rng >> 33) as usize % ts.len()];
            let d = (rng >> 40) % (3 * MS);
            match core.enqueue(who.0, who.1, kernel(d), NO_EVENT, t) {
                Ok(_) => accepted += 1,
                Err(e) => assert_eq!(e, CtxFault::QueueFull),
            }
            t += (rng >> 20) % (400 * US);
            core.advance(t);
        }
        core.advance(t + 10_000 * MS);
        let s = core.st.sched;
        assert_eq!(s.busy_ns + s.idle_ns + s.switching_ns, t + 10_000 * MS);
        let per_pid: u64 = (10..15)
            .map(|pid| core.busy_between(pid, 0, u64::MAX).busy_ns)
            .sum();
        assert_eq!(per_pid, s.busy_ns);
        let per_ctx: u64 = ts.iter().map(|x| core.st.ctxs[x.0].busy_ns).sum();
        assert_eq!(per_ctx, s.busy_ns);
        let work: u64 = ts.iter().map(|x| core.st.ctxs[x.0].items_completed).sum();
        assert!(ts.iter().all(|x| core.st.ctxs[x.0].len == 0));
        assert_eq!(work, accepted);
        // Overloaded (~3 s of work offered in ~0.4 s): every queue filled up.
        assert!((5 * 64..2000).contains(&accepted), "{accepted}");
    }
}

//! The time-slicing engine: pure code, no clock reads, no syscalls.
//!
//! [`advance`] moves a device from its model time [`Sched::now`] to a later
//! time `now`, assuming no work arrives in between (arrivals are applied by
//! the caller at the instant they happen, after advancing to it). It is a
//! deterministic function of the scheduler state, the [`Workload`] and `now`,
//! so the same code runs on the shared-memory state (see `core`) and, for
//! projections, on a compact copy ([`project`]).
//!
//! # Rules (a model of GPU time-slicing between contexts)
//!
//! 1. One context runs at a time: the *resident* one. A context is *ready*
//!    when it has timed work (kernels, graphs) queued. Its work runs FIFO.
//! 2. A resident that is switched in starts a timeslice (`timeslice_ns`).
//!    When the slice ends and another context is ready, the resident is
//!    preempted, even mid-kernel (the kernel keeps its remaining time), and
//!    the device switches to the next ready context in round-robin order
//!    (cyclic by context index after the resident). A switch takes
//!    `switch_ns`, during which nothing runs. When the slice ends and nobody
//!    else is ready, the resident keeps the device and its slice renews.
//! 3. When the resident runs out of timed work and another context is ready,
//!    the device switches to it at once (paying the switch). When nobody is
//!    ready the device idles and the resident stays resident: if it gets work
//!    first, it runs at once with a new slice and no switch cost. A device
//!    that never had a resident (fresh) loads its first context for free.
//! 4. Zero-duration items (copies) are not the engine's business:
//!    the workload completes them when every earlier item of their context
//!    has completed, at that instant (see `core`).
//!
//! The target of a switch is chosen when the switch starts. If it has lost
//! its work when the switch ends (its process died), it becomes resident
//! anyway and the idle rules apply.

/// `resident` of a device that never loaded a context.
pub const NONE: u32 = u32::MAX;
/// `resident` after the resident context's slot was reused: the next load
/// costs a switch, and round-robin restarts from index 0.
pub const GONE: u32 = u32::MAX - 1;

/// The device is idle (no context has timed work, or none was picked yet).
pub const PHASE_IDLE: u32 = 0;
/// The resident context is running its head item.
pub const PHASE_RUNNING: u32 = 1;
/// A context switch to `switch_target` is in progress until `switch_end`.
pub const PHASE_SWITCHING: u32 = 2;

/// Scheduler state of one device. Plain integers only: it lives in the
/// shared file, where any bit pattern must be harmless.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    /// Model time the device has been advanced to.
    pub now: u64,
    pub phase: u32,
    /// Index of the resident context, or [`NONE`] / [`GONE`].
    pub resident: u32,
    /// Start of the resident's current timeslice.
    pub slice_start: u64,
    pub switch_end: u64,
    pub switch_target: u32,
    pub _pad: u32,
    /// Device time spent running work.
    pub busy_ns: u64,
    /// Device time spent with nothing to run.
    pub idle_ns: u64,
    /// Device time spent switching contexts.
    pub switching_ns: u64,
    /// Context switches started.
    pub context_switches: u64,
}

impl Sched {
    /// A fresh device at time `t0`: idle, no resident.
    pub fn new(t0: u64) -> Sched {
        Sched {
            now: t0,
            phase: PHASE_IDLE,
            resident: NONE,
            ..Sched::default()
        }
    }
}

/// Timing parameters of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub timeslice_ns: u64,
    pub switch_ns: u64,
}

/// Shortest timeslice the engine accepts (a smaller value read from a
/// corrupted file is raised to it, so every slice makes progress).
pub const MIN_TIMESLICE_NS: u64 = 1_000;

impl Timing {
    fn slice(&self) -> u64 {
        self.timeslice_ns.max(MIN_TIMESLICE_NS)
    }
}

/// Up to 64 contexts, identified by index (bit `c` of [`Workload::ready_mask`]).
pub const MAX_CONTEXTS: usize = 64;

/// What the engine needs from the queued work.
pub trait Workload {
    /// Bit `c` set iff context `c` has timed work whose head item has
    /// remaining time > 0.
    fn ready_mask(&self) -> u64;
    /// Remaining time of context `c`'s head item (> 0 when ready).
    fn head_remaining(&self, c: usize) -> u64;
    /// Context `c` ran `[t0, t1)` on its head item, with
    /// `t1 - t0 <= head_remaining(c)`. When the head's remaining time reaches
    /// zero the workload completes it (and any zero-duration items behind it)
    /// at `t1`.
    fn run(&mut self, c: usize, t0: u64, t1: u64);
}

/// The next ready context after `after` in cyclic index order, excluding
/// `after` itself; from index 0 when `after` is not a context index.
pub fn next_ready_after(mask: u64, after: u32) -> Option<usize> {
    if (after as usize) >= MAX_CONTEXTS {
        return if mask == 0 {
            None
        } else {
            Some(mask.trailing_zeros() as usize)
        };
    }
    let m = mask & !(1u64 << after);
    if m == 0 {
        return None;
    }
    let above = m & 1u64.checked_shl(after + 1).map_or(0, |b| !(b - 1));
    let pick = if above != 0 { above } else { m };
    Some(pick.trailing_zeros() as usize)
}

fn is_ready(mask: u64, c: u32) -> bool {
    (c as usize) < MAX_CONTEXTS && (mask >> c) & 1 == 1
}

fn start_switch(s: &mut Sched, target: usize, t: u64, tm: Timing) {
    s.phase = PHASE_SWITCHING;
    s.switch_target = target as u32;
    s.switch_end = t.saturating_add(tm.switch_ns);
    s.context_switches = s.context_switches.saturating_add(1);
}

/// Advances the device from `s.now` to `now` (no-op for the past; the
/// instantaneous transitions at `s.now` are still made, so calling it again
/// after an arrival at the same instant starts that work).
///
/// Terminates: every iteration either advances time, or makes a phase
/// change that is followed by progress (the timeslice is at least
/// [`MIN_TIMESLICE_NS`], a ready context has remaining time > 0).
pub fn advance<W: Workload>(s: &mut Sched, tm: Timing, w: &mut W, now: u64) {
    let mut t = s.now;
    let now = now.max(t);
    let slice = tm.slice();
    loop {
        match s.phase {
            PHASE_SWITCHING => {
                let end = s.switch_end.max(t);
                if end > now {
                    s.switching_ns = s.switching_ns.saturating_add(now - t);
                    t = now;
                    break;
                }
                s.switching_ns = s.switching_ns.saturating_add(end - t);
                t = end;
                s.resident = s.switch_target;
                if is_ready(w.ready_mask(), s.resident) {
                    s.phase = PHASE_RUNNING;
                    s.slice_start = t;
                } else {
                    s.phase = PHASE_IDLE;
                }
            }
            PHASE_RUNNING => {
                let r = s.resident;
                let mask = w.ready_mask();
                if !is_ready(mask, r) {
                    // Rule 3: out of work (or its process died).
                    match next_ready_after(mask, r) {
                        Some(c) => start_switch(s, c, t, tm),
                        None => s.phase = PHASE_IDLE,
                    }
                    continue;
                }
                let mut slice_end = s.slice_start.saturating_add(slice);
                if t >= slice_end {
                    // Rule 2: preempt if anybody else is ready, else renew.
                    if let Some(c) = next_ready_after(mask, r) {
                        start_switch(s, c, t, tm);
                        continue;
                    }
                    s.slice_start = t;
                    slice_end = t.saturating_add(slice);
                }
                if t >= now {
                    break;
                }
                // Nobody else can become ready during one advance (arrivals
                // are applied between advances), so a resident that is alone
                // runs across slice ends without stopping at each, and its
                // slice is renewed arithmetically: the cost of an advance is
                // O(items completed + switches), not O(elapsed time).
                let alone = next_ready_after(mask, r).is_none();
                let limit = if alone { now } else { slice_end };
                let rem = w.head_remaining(r as usize);
                let end = t.saturating_add(rem).min(limit).min(now);
                w.run(r as usize, t, end);
                s.busy_ns = s.busy_ns.saturating_add(end - t);
                t = end;
                if alone {
                    // The slice containing t (a slice that ends exactly at t
                    // is renewed at t, as in the step-by-step rule above).
                    let k = t.saturating_sub(s.slice_start) / slice;
                    s.slice_start = s.slice_start.saturating_add(k.saturating_mul(slice));
                }
            }
            _ => {
                // Idle (or an unknown phase read from a corrupted file).
                s.phase = PHASE_IDLE;
                let mask = w.ready_mask();
                if is_ready(mask, s.resident) {
                    s.phase = PHASE_RUNNING;
                    s.slice_start = t;
                    continue;
                }
                match next_ready_after(mask, s.resident) {
                    Some(c) if s.resident == NONE => {
                        s.resident = c as u32;
                        s.phase = PHASE_RUNNING;
                        s.slice_start = t;
                    }
                    Some(c) => start_switch(s, c, t, tm),
                    None => {
                        s.idle_ns = s.idle_ns.saturating_add(now - t);
                        t = now;
                        break;
                    }
                }
            }
        }
    }
    s.now = t;
}

/// A compact workload for projections: each context's total remaining timed
/// work, plus a target amount of context `target`'s work whose completion
/// time is wanted. Item boundaries within a context do not influence
/// scheduling, so totals suffice.
struct ProjectionWork {
    rem: [u64; MAX_CONTEXTS],
    mask: u64,
    target: usize,
    target_left: u64,
    done_at: Option<u64>,
}

impl Workload for ProjectionWork {
    fn ready_mask(&self) -> u64 {
        self.mask
    }
    fn head_remaining(&self, c: usize) -> u64 {
        let rem = self.rem.get(c).copied().unwrap_or(0);
        if c == self.target && self.target_left > 0 {
            rem.min(self.target_left)
        } else {
            rem
        }
    }
    fn run(&mut self, c: usize, t0: u64, t1: u64) {
        let dt = t1.saturating_sub(t0);
        if let Some(r) = self.rem.get_mut(c) {
            *r = r.saturating_sub(dt);
            if *r == 0 {
                self.mask &= !(1u64 << c);
            }
        }
        if c == self.target && self.target_left > 0 {
            self.target_left = self.target_left.saturating_sub(dt);
            if self.target_left == 0 {
                self.done_at = Some(t1);
            }
        }
    }
}

/// When `target_work` ns of context `target`'s queued work will have run,
/// if nothing new arrives, or None when that is after `horizon`.
///
/// `remaining[c]` is context c's total remaining timed work (0 = not ready).
/// Because new work elsewhere can only delay a context, the projection is a
/// lower bound of the true completion time: a waiter may sleep until it.
pub fn project(
    s: &Sched,
    tm: Timing,
    remaining: &[u64; MAX_CONTEXTS],
    target: usize,
    target_work: u64,
    horizon: u64,
) -> Option<u64> {
    if target_work == 0 {
        return Some(s.now);
    }
    let mut w = ProjectionWork {
        rem: *remaining,
        mask: 0,
        target,
        target_left: target_work,
        done_at: None,
    };
    if let Some(r) = w.rem.get_mut(target) {
        *r = (*r).max(target_work);
    }
    for (c, r) in w.rem.iter().enumerate() {
        if *r > 0 {
            w.mask |= 1u64 << c;
        }
    }
    let mut copy = *s;
    advance(&mut copy, tm, &mut w, horizon);
    w.done_at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single context with one huge item: counts engine steps.
    struct Lone {
        rem: u64,
        steps: u64,
    }
    impl Workload for Lone {
        fn ready_mask(&self) -> u64 {
            u64::from(self.rem > 0)
        }
        fn head_remaining(&self, _: usize) -> u64 {
            self.rem
        }
        fn run(&mut self, _: usize, t0: u64, t1: u64) {
            self.rem -= t1 - t0;
            self.steps += 1;
        }
    }

    #[test]
    fn a_lone_resident_costs_no_steps_per_slice() {
        let tm = Timing {
            timeslice_ns: 1_000,
            switch_ns: 500,
        };
        let mut s = Sched::new(0);
        let mut w = Lone {
            rem: 10_000_000_000,
            steps: 0,
        };
        advance(&mut s, tm, &mut w, 5_000_000_500);
        assert_eq!(w.steps, 1, "5 s of a lone resident is one step");
        assert_eq!(s.busy_ns, 5_000_000_500);
        // The current slice is the one containing now.
        assert_eq!(s.slice_start, 5_000_000_000);
        advance(&mut s, tm, &mut w, 5_000_001_000);
        assert_eq!(
            s.slice_start, 5_000_001_000,
            "a slice ending exactly now is renewed"
        );
    }

    #[test]
    fn next_ready_is_cyclic_and_excludes_self() {
        assert_eq!(next_ready_after(0, 3), None);
        assert_eq!(next_ready_after(1 << 3, 3), None);
        assert_eq!(next_ready_after((1 << 3) | (1 << 5), 3), Some(5));
        assert_eq!(next_ready_after((1 << 1) | (1 << 3), 3), Some(1));
        assert_eq!(next_ready_after((1 << 0) | (1 << 63), 63), Some(0));
        assert_eq!(next_ready_after(1 << 63, 0), Some(63));
        assert_eq!(next_ready_after((1 << 7) | (1 << 2), NONE), Some(2));
        assert_eq!(next_ready_after((1 << 7) | (1 << 2), GONE), Some(2));
    }

    #[test]
    fn projection_of_lone_context_is_exact() {
        let s = Sched::new(1_000);
        let tm = Timing {
            timeslice_ns: 1_024_000,
            switch_ns: 90_000,
        };
        let mut rem = [0u64; MAX_CONTEXTS];
        rem[4] = 5_000_000;
        // Fresh device: loaded for free, runs back to back across slices.
        assert_eq!(
            project(&s, tm, &rem, 4, 3_000_000, u64::MAX),
            Some(3_001_000)
        );
        assert_eq!(project(&s, tm, &rem, 4, 3_000_000, 2_000_000), None);
    }

    #[test]
    fn projection_accounts_for_a_competitor() {
        let mut s = Sched::new(0);
        s.phase = PHASE_RUNNING;
        s.resident = 1;
        s.slice_start = 0;
        let tm = Timing {
            timeslice_ns: 1_000_000,
            switch_ns: 100_000,
        };
        let mut rem = [0u64; MAX_CONTEXTS];
        rem[1] = 10_000_000; // saturating neighbour, resident
        rem[2] = 50_000; // victim
                         // Victim waits for the slice end (1 ms) and a switch (0.1 ms).
        assert_eq!(project(&s, tm, &rem, 2, 50_000, u64::MAX), Some(1_150_000));
    }
}

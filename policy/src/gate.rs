//! The launch gate of one process on one device: the decision to let a
//! launch go now, or how long to wait.
//!
//! In order, a launch waits while:
//! 1. a *hold* is in force (set from outside, e.g. by a broker giving a
//!    latency-sensitive tenant the device; nothing sets it yet);
//! 2. its key is on probation (never measured, one measurement in flight);
//! 3. the estimated work in flight would exceed `max_inflight_ns` (so a
//!    throttled tenant cannot park a deep queue in front of others; one
//!    launch is always allowed when nothing is in flight), or a majority
//!    tenant's run has reached its cap (below);
//! 4. the token bucket is in debt, or (for a tenant that takes turns, see
//!    below) until its previous turn has completed and the bucket holds a
//!    *quantum* again.
//!
//! A process whose share is the whole device (no one else has work on it,
//! nothing caps it) and that has no slot is not paced: the bucket is only
//! charged (what it queues ahead is its debt, at most that much, paid first
//! if its share drops and no slot replaces pacing) and its queue may hold
//! `whole_inflight_ns` of work. A short queue
//! would gain nobody anything then, and it would turn every delay of the
//! launching thread (a CPU-limited pod, a loaded node) into idle GPU time
//! that the same program without tslice, queuing ahead, does not have.
//!
//! A throttled tenant whose share is below half of the device thus runs in
//! turns: it waits until its previous turn has completed and its bucket
//! holds a quantum (default 1 ms, just under the GPU's 1024 us timeslice),
//! then launches at most a
//! quantum of estimated work back to back. While the GPU keeps up, waiting
//! for the previous turn costs nothing (refilling a quantum takes longer than
//! running one); when the GPU is oversubscribed (shares summing to 100% leave
//! no room for context switches) it keeps a tenant from stacking turns into
//! runs longer than a timeslice, which the GPU would preempt mid-kernel. A
//! tenant with half of the device or more keeps its queue full instead: its
//! own turns would only add idle gaps, and the others wait at most a
//! timeslice for it either way. Pacing each launch separately would give the
//! other tenants the device after every kernel, and every such turn costs two
//! context switches (about 8% of a timeslice each on real GPUs); a turn
//! shorter than the timeslice also ends by itself, so the neighbour gets the
//! device at a kernel boundary instead of by preempting a running kernel, and
//! a latency-sensitive neighbour waits at most about a quantum.
//!
//! A majority tenant's queue is kept full only within a *run*: once it has
//! launched [`Gate::run_cap_ns`] back to back (500 us at 50% by default,
//! longer with its share), its last launch is fenced and the next one waits
//! until the queue is seen to drain, which hands a waiting neighbour the
//! device. Paced at its share it rarely reaches the cap; the cap matters
//! when it spends banked time (its bucket filled while its launching thread
//! was held up, as on a loaded host): in one run of its whole burst it would
//! hold the device for a whole timeslice while a latency-sensitive neighbour
//! arrived (measured beside a 50% neighbour on a loaded 2-core host: the
//! victim's p99 on the device 1381 us, a full timeslice, vs 764 us capped).
//! Runs that would reach a timeslice are not capped (see `run_cap_ns`).
//!
//! The caller (the shim) reports completions of fences and measurements, and
//! measured durations, which correct both the bucket and the estimates.
//!
//! A measurement is a wall-clock span, which under time-slicing includes the
//! other tenants' turn when the kernel was preempted at the end of its
//! context's timeslice. When the estimator flags a sample of a tight key as a
//! likely preemption, the gate forgives the excess, within what time-slicing
//! can physically cause: at most one foreign turn (`timeslice + 2 x switch`)
//! per sample, and at most one forgiven sample per timeslice of the
//! tenant's own charged time (a context is preempted at most once per slice
//! it runs). What cannot be told apart from preemption locally (a kernel of
//! one launch geometry that is rarely much slower) is therefore undercharged
//! by at most that much; the broker, which sees every tenant, removes the
//! ambiguity.

use crate::bucket::TokenBucket;
use crate::estimate::{Estimator, EstimatorConfig, Kind, Observed};
use crate::quota::Ppm;

/// A share one ppm short of the whole device: paced (a 2 ms queue), where
/// the whole device is not (a 20 ms queue that cannot be called back). A
/// broker gives it instead of the whole device where a deep queue could be
/// in someone's way.
pub const SHORT_OF_WHOLE: Ppm = Ppm(999_999);

#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Share of the device's time.
    pub share: Ppm,
    /// Most device time that can be spent at once after being idle.
    pub burst_ns: u64,
    /// Most estimated work in flight (with the whole device,
    /// `whole_inflight_ns`).
    pub max_inflight_ns: u64,
    /// Most estimated work in flight for a process that has the whole
    /// device (share 100%, no slot): enough to ride out its thread's delays,
    /// short enough that it drains within a few broker ticks once another
    /// tenant arrives.
    pub whole_inflight_ns: u64,
    /// Longest run of back-to-back work (estimated) that a paced process
    /// with half of the device or more launches before it lets its queue
    /// drain, scaled by `share / (1 - share)` (see [`Gate::run_cap_ns`]).
    /// A latency-sensitive neighbour that arrives during a run waits at
    /// most about that long, not a whole timeslice, also when the process
    /// spends banked time (after its launching thread was held up).
    pub run_ns: u64,
    /// Estimated work a throttled tenant launches per turn. Longer turns mean
    /// fewer context switches (two per turn); up to a timeslice they do not
    /// lengthen anyone's worst-case wait, which the GPU bounds at one
    /// timeslice anyway.
    pub quantum_ns: u64,
    /// How long to wait before looking again for completions.
    pub poll_ns: u64,
    /// The GPU's timeslice and context-switch cost (bounds on what
    /// preemption can add to a measurement).
    pub timeslice_ns: u64,
    pub switch_ns: u64,
    pub estimator: EstimatorConfig,
}

impl GateConfig {
    pub fn new(share: Ppm) -> GateConfig {
        GateConfig {
            share,
            burst_ns: 2_000_000,
            max_inflight_ns: 2_000_000,
            whole_inflight_ns: 20_000_000,
            quantum_ns: 1_000_000,
            run_ns: 500_000,
            poll_ns: 50_000,
            timeslice_ns: 1_024_000,
            switch_ns: 100_000,
            estimator: EstimatorConfig::default(),
        }
    }
}

/// A recurring time slot of the device given to this process by the broker
/// (coordinated turns): every `cycle_ns` from `anchor_ns` (on the
/// `CLOCK_MONOTONIC` clock every process shares), the process may run
/// during `[offset_ns, offset_ns + len_ns)`; the others hold their launches
/// then, so the device changes hands once per slot instead of every
/// timeslice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub anchor_ns: u64,
    pub cycle_ns: u64,
    pub offset_ns: u64,
    pub len_ns: u64,
}

impl Slot {
    /// Where `now` falls in the cycle.
    fn pos(&self, now: u64) -> u64 {
        let c = self.cycle_ns.max(1);
        if now >= self.anchor_ns {
            (now - self.anchor_ns) % c
        } else {
            (c - (self.anchor_ns - now) % c) % c
        }
    }

    /// Time left in the slot at `now`, or None outside it.
    pub fn remaining(&self, now: u64) -> Option<u64> {
        let pos = self.pos(now);
        let end = self.offset_ns.saturating_add(self.len_ns);
        (pos >= self.offset_ns && pos < end).then(|| end - pos)
    }

    /// Time until the slot next opens.
    pub fn until_next(&self, now: u64) -> u64 {
        let pos = self.pos(now);
        if pos < self.offset_ns {
            self.offset_ns - pos
        } else {
            self.cycle_ns.max(1) - pos + self.offset_ns
        }
    }
}

/// A launch that was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub key: u64,
    pub cost_ns: u64,
    /// Measure this launch with timing events.
    pub sample: bool,
    /// Record a completion fence after this launch (never with `sample`,
    /// whose end event serves as one).
    pub fence: bool,
    /// Estimated work submitted by this process, this launch included: a
    /// fence or measurement recorded after it completes this much.
    pub cum_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Go(Ticket),
    /// Wait this long (then ask again).
    Wait(u64),
}

/// Why launches waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    pub launches: u64,
    pub waits_budget: u64,
    pub waits_inflight: u64,
    /// Launches that waited for the queue to drain at the end of a run
    /// (see [`GateConfig::run_ns`]).
    pub waits_run: u64,
    pub waits_probation: u64,
    pub waits_hold: u64,
    /// Launches that waited for their slot (coordinated turns).
    pub waits_slot: u64,
    /// Device time charged after measurement corrections.
    pub charged_ns: u64,
    /// Samples judged preempted, and the excess forgiven for them.
    pub forgiven_samples: u64,
    pub forgiven_ns: u64,
}

/// Longest run of a paced process that does not take turns:
/// `run_ns x share / (1 - share)` (at least `run_ns`), so that the gap
/// in which its queue is seen to drain (up to `run_ns`) costs it none
/// of its share; by default 500 us at 50%, 750 us at 60%. A run that
/// would reach a timeslice (from about 67% by default) is not capped:
/// the GPU itself ends it at the timeslice for a neighbour that waits,
/// so a cap would gain that neighbour nothing, and every drained queue
/// costs the process GPU time whenever its launching thread is held up
/// just then (measured: about 3 points at 70% on a loaded 2-core host).
/// `run_ns` 0 turns runs off.
fn run_cap_ns(cfg: &GateConfig) -> u64 {
    let share = u128::from(cfg.share.0);
    let one = u128::from(Ppm::ONE.0);
    if share >= one || cfg.run_ns == 0 {
        return u64::MAX;
    }
    let run = u128::from(cfg.run_ns);
    let scaled = (run.saturating_mul(share) / (one - share)).max(run);
    if scaled >= u128::from(cfg.timeslice_ns) {
        return u64::MAX;
    }
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub struct Gate {
    cfg: GateConfig,
    bucket: TokenBucket,
    est: Estimator,
    submitted_ns: u64,
    completed_ns: u64,
    /// `cum_ns` of the last launch followed by a fence or measurement.
    marked_ns: u64,
    /// Own charged time not yet matched by a forgiven preemption.
    forgive_credit_ns: u64,
    /// The bucket ran dry: launches wait for a quantum before the next turn.
    throttled: bool,
    /// Estimated work launched in the current turn.
    turn_ns: u64,
    /// Estimated work launched since all of it was last known complete.
    run_launched_ns: u64,
    /// [`Gate::run_cap_ns`] for the share in force.
    run_cap_ns: u64,
    /// The last wait was for completions (probation, in flight, turn, the
    /// end of a run).
    waiting_on_completions: bool,
    hold_until_ns: u64,
    /// The broker's slot for this process, when it coordinates turns.
    slot: Option<Slot>,
    stats: GateStats,
}

impl Gate {
    pub fn new(cfg: GateConfig, now_ns: u64) -> Gate {
        let run_cap = run_cap_ns(&cfg);
        Gate {
            bucket: TokenBucket::new(cfg.share, cfg.burst_ns, now_ns),
            est: Estimator::new(cfg.estimator.clone()),
            cfg,
            submitted_ns: 0,
            completed_ns: 0,
            marked_ns: 0,
            forgive_credit_ns: 0,
            throttled: false,
            turn_ns: 0,
            run_launched_ns: 0,
            run_cap_ns: run_cap,
            waiting_on_completions: false,
            hold_until_ns: 0,
            slot: None,
            stats: GateStats::default(),
        }
    }

    pub fn config(&self) -> &GateConfig {
        &self.cfg
    }

    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// Estimated work submitted so far (a ticket's `cum_ns` counts up to it).
    pub fn submitted_ns(&self) -> u64 {
        self.submitted_ns
    }

    /// Estimated work submitted and not yet known to be complete.
    pub fn inflight_ns(&self) -> u64 {
        self.submitted_ns.saturating_sub(self.completed_ns)
    }

    /// In-flight work as far as completions can show it: once every marker
    /// has completed, the launches after the last one (cheap, unmeasured,
    /// less than a fence interval in all) cannot be observed completing, so
    /// they do not hold the next launch back.
    fn observable_inflight_ns(&self) -> u64 {
        if self.completed_ns >= self.marked_ns {
            0
        } else {
            self.inflight_ns()
        }
    }

    /// Tenants below half of the device run in turns; the majority tenant
    /// keeps its queue full instead (its turns would only add gaps of its
    /// own, while the others wait at most a timeslice for it either way).
    fn takes_turns(&self) -> bool {
        self.cfg.share.0 < 500_000
    }

    /// Longest run of a paced process that does not take turns (see
    /// [`run_cap_ns`]).
    pub fn run_cap_ns(&self) -> u64 {
        self.run_cap_ns
    }

    /// The whole device and no slot: not paced (see the module's doc).
    fn has_whole_device(&self) -> bool {
        self.cfg.share.0 >= Ppm::ONE.0 && self.slot.is_none()
    }

    /// Most estimated work in flight now: the whole device's deeper queue,
    /// else `max_inflight_ns`.
    fn inflight_bound_ns(&self) -> u64 {
        if self.has_whole_device() {
            self.cfg.whole_inflight_ns.max(self.cfg.max_inflight_ns)
        } else {
            self.cfg.max_inflight_ns
        }
    }

    /// A fence every quarter of the bound in force, so that completions are
    /// seen a few times per queue however deep it may be.
    fn fence_interval_ns(&self) -> u64 {
        (self.inflight_bound_ns() / 4).max(1)
    }

    /// Holds every launch until `until_ns` (a later call replaces it).
    pub fn hold_until(&mut self, until_ns: u64) {
        self.hold_until_ns = until_ns;
    }

    /// Launches only in this recurring slot (None: paced by the bucket).
    /// Within its slot a process is not paced by its share: the slot is
    /// its share.
    pub fn set_slot(&mut self, slot: Option<Slot>) {
        self.slot = slot.filter(|s| s.len_ns > 0 && s.cycle_ns > 0);
    }

    /// Decides a launch of `key` at time `now_ns`.
    pub fn admit(&mut self, key: u64, kind: Kind, now_ns: u64) -> Decision {
        self.admit_with(key, kind, || now_ns)
    }

    /// Decides a launch of `key`, reading the clock (`now`) only when the
    /// decision needs it: the common case (the budget plainly pays for the
    /// launch) reads no clock at all. `now` may be called more than once and
    /// must be monotonic.
    pub fn admit_with(&mut self, key: u64, kind: Kind, mut now: impl FnMut() -> u64) -> Decision {
        if self.hold_until_ns > 0 {
            let t = now();
            if t < self.hold_until_ns {
                self.stats.waits_hold += 1;
                self.waiting_on_completions = false;
                return Decision::Wait(self.hold_until_ns - t);
            }
        }
        self.waiting_on_completions = true;
        let (probation, cost) = self.est.peek(key, kind);
        if probation {
            self.stats.waits_probation += 1;
            return Decision::Wait(self.cfg.poll_ns);
        }
        let inflight = self.observable_inflight_ns();
        if self.inflight_ns() == 0 {
            // Every launch is known complete: the next one starts a run.
            self.run_launched_ns = 0;
        }
        if inflight > 0 && inflight.saturating_add(cost) > self.inflight_bound_ns() {
            self.stats.waits_inflight += 1;
            return Decision::Wait(self.cfg.poll_ns.min(inflight));
        }
        if self.has_whole_device() {
            self.waiting_on_completions = false;
            self.throttled = false;
            self.turn_ns = 0;
            // Charged as it goes: without the clock while the balance at
            // the last refill pays, else with it (exact however far ahead
            // it queues). Its debt is at most what it has queued ahead
            // (measurements of overlapping streams can charge more than
            // the device's time; a paced process would have waited).
            if !self.bucket.try_admit_stale(cost) {
                let t = now();
                self.bucket.charge(cost.min(i64::MAX as u64) as i64, t);
                let ahead = self.inflight_ns().saturating_add(cost);
                self.bucket.limit_debt(ahead, t);
            }
            return self.go(key, kind, cost, false);
        }
        if let Some(slot) = self.slot {
            self.waiting_on_completions = false;
            let t = now();
            let Some(left) = slot.remaining(t) else {
                self.stats.waits_slot += 1;
                return Decision::Wait(slot.until_next(t));
            };
            // Launch while the queue would start draining within the slot
            // (the last kernel may run over by up to its length: the device
            // stays busy until the next process's work, queued during its
            // lead-in, takes over); a kernel longer than what is left starts
            // only near the slot's start (so a long kernel still gets its
            // turn, once per slot).
            let fits = inflight < left;
            let opening = inflight == 0 && left.saturating_mul(4) >= slot.len_ns.saturating_mul(3);
            if !fits && !opening {
                self.stats.waits_slot += 1;
                return Decision::Wait(left + slot.cycle_ns.saturating_sub(slot.len_ns));
            }
            return self.go(key, kind, cost, false);
        }
        let runs = !self.takes_turns();
        if runs && inflight > 0 && self.run_launched_ns.saturating_add(cost) > self.run_cap_ns {
            // The end of a run (its last launch was fenced): the queue
            // drains, and a waiting neighbour gets the device, first. (With
            // nothing observable in flight the launch goes, fenced.)
            self.stats.waits_run += 1;
            return Decision::Wait(self.cfg.poll_ns.min(inflight));
        }
        if self.throttled {
            let quantum = self.cfg.quantum_ns.min(self.cfg.burst_ns);
            let inflight = self.observable_inflight_ns();
            if inflight > 0 {
                self.stats.waits_inflight += 1;
                return Decision::Wait(self.cfg.poll_ns.min(inflight));
            }
            self.waiting_on_completions = false;
            let now_ns = now();
            let w = self.bucket.time_to_level(quantum, now_ns);
            if w > 0 {
                self.stats.waits_budget += 1;
                return Decision::Wait(w);
            }
            self.throttled = false;
            self.turn_ns = 0;
        }
        self.waiting_on_completions = false;
        if !self.bucket.try_admit_stale(cost) {
            let now_ns = now();
            if let Err(w) = self.bucket.try_admit(cost, now_ns) {
                self.stats.waits_budget += 1;
                if !self.takes_turns() {
                    return Decision::Wait(w);
                }
                self.throttled = true;
                let quantum = self.cfg.quantum_ns.min(self.cfg.burst_ns);
                return Decision::Wait(w.max(self.bucket.time_to_level(quantum, now_ns)));
            }
        }
        self.turn_ns = self.turn_ns.saturating_add(cost);
        let turn_over = self.takes_turns()
            && self.turn_ns >= self.cfg.quantum_ns
            && self.bucket.balance(now()) < self.cfg.quantum_ns as i64;
        // The last launch of a run (another like it would pass the cap) is
        // fenced, so that its queue can be seen to drain.
        let run_over = runs
            && self
                .run_launched_ns
                .saturating_add(cost)
                .saturating_add(cost)
                > self.run_cap_ns;
        if turn_over {
            // The turn has had its quantum and the bucket cannot pay another
            // one: the next launch waits for the next turn, which starts once
            // this one is seen complete (hence a fence after this launch).
            self.throttled = true;
        }
        self.go(key, kind, cost, turn_over || run_over)
    }

    /// Lets a launch of `key` go: its plan (measure it or not), a fence when
    /// one is due (or `fence_now`), and the accounting.
    fn go(&mut self, key: u64, kind: Kind, cost: u64, fence_now: bool) -> Decision {
        let plan = self.est.plan(key, kind);
        debug_assert_eq!(plan.cost_ns, cost);
        self.submitted_ns = self.submitted_ns.saturating_add(cost);
        self.run_launched_ns = self.run_launched_ns.saturating_add(cost);
        let fence = !plan.sample
            && (fence_now || self.submitted_ns - self.marked_ns >= self.fence_interval_ns());
        if plan.sample || fence {
            self.marked_ns = self.submitted_ns;
        }
        self.stats.launches += 1;
        self.stats.charged_ns = self.stats.charged_ns.saturating_add(cost);
        Decision::Go(Ticket {
            key,
            cost_ns: cost,
            sample: plan.sample,
            fence,
            cum_ns: self.submitted_ns,
        })
    }

    /// The launch let through by `t` failed: give its cost back. A failed
    /// launch records no event, so if it was to carry a measurement or a
    /// fence, the work before it would never be seen completing: count it
    /// complete (what is really still running is less than a fence interval).
    pub fn cancel(&mut self, t: &Ticket, now_ns: u64) {
        self.bucket
            .charge(-(t.cost_ns.min(i64::MAX as u64) as i64), now_ns);
        self.stats.charged_ns = self.stats.charged_ns.saturating_sub(t.cost_ns);
        if t.sample || t.fence {
            self.lost(t, now_ns);
        }
    }

    /// The fence or measurement that launch `t` carried will never report
    /// (its launch failed, its events could not be recorded or read, its
    /// context is gone): the work up to it counts as complete, and a
    /// measurement as lost.
    pub fn lost(&mut self, t: &Ticket, now_ns: u64) {
        if t.sample {
            self.measured(t, None, now_ns);
        } else {
            self.completed(t.cum_ns);
        }
    }

    /// Whether the last `Wait` was for completions (probation, the in-flight
    /// bound, the previous turn) rather than for budget or a hold.
    pub fn waiting_on_completions(&self) -> bool {
        self.waiting_on_completions
    }

    /// What has been seen completing so far; it only grows.
    pub fn progress(&self) -> u64 {
        self.completed_ns
    }

    /// Counts everything submitted as complete and every measurement in
    /// flight as lost. The shim's escape when completions stop coming (GPU
    /// work that waits for something the host does after its next launch, a
    /// wedged context): launches then wait for budget only, instead of
    /// forever.
    pub fn force_complete(&mut self) {
        self.completed_ns = self.submitted_ns;
        self.est.abandon_pending();
    }

    /// Everything submitted up to `cum_ns` (a ticket's) has completed.
    pub fn completed(&mut self, cum_ns: u64) {
        self.completed_ns = self.completed_ns.max(cum_ns.min(self.submitted_ns));
    }

    /// The measured launch `t` ran for `measured_ns` (None: the measurement
    /// was lost). Corrects the bucket by the difference between what is
    /// charged for it and the estimate taken at launch.
    pub fn measured(&mut self, t: &Ticket, measured_ns: Option<u64>, now_ns: u64) {
        if let Some(obs) = self.est.observe(t.key, measured_ns) {
            let charge = self.charge_for(obs);
            let delta = charge as i128 - t.cost_ns as i128;
            let delta = delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            self.bucket.charge(delta, now_ns);
            self.stats.charged_ns = (self.stats.charged_ns as i128 + delta as i128).max(0) as u64;
        }
        self.completed(t.cum_ns);
    }

    /// What to charge for a measurement: as measured, less a preemption's
    /// worth when the sample looks preempted and the tenant has run long
    /// enough since the last forgiven one to have been preempted again.
    fn charge_for(&mut self, obs: Observed) -> u64 {
        let slice = self.cfg.timeslice_ns.max(1);
        let x = obs.measured_ns;
        self.forgive_credit_ns = self
            .forgive_credit_ns
            .saturating_add(obs.typical.unwrap_or(x))
            .min(2 * slice);
        let Some(typical) = obs.typical else { return x };
        if self.forgive_credit_ns < slice {
            return x;
        }
        self.forgive_credit_ns -= slice;
        let turn = slice.saturating_add(2 * self.cfg.switch_ns);
        let charge = typical.max(x.saturating_sub(turn));
        self.stats.forgiven_samples += 1;
        self.stats.forgiven_ns += x - charge;
        charge
    }

    /// Changes the share from now on. Leaving the whole device, its debt is
    /// at most what it has queued ahead (measurements since its last
    /// launch included).
    pub fn set_share(&mut self, share: Ppm, now_ns: u64) {
        if self.has_whole_device() && share.0 < Ppm::ONE.0 {
            self.bucket.limit_debt(self.inflight_ns(), now_ns);
        }
        self.cfg.share = share;
        self.run_cap_ns = run_cap_ns(&self.cfg);
        self.bucket.set_rate(share, now_ns);
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn slot_arithmetic() {
        let s = Slot {
            anchor_ns: 100 * MS,
            cycle_ns: 10 * MS,
            offset_ns: 4 * MS,
            len_ns: 3 * MS,
        };
        assert_eq!(s.remaining(104 * MS), Some(3 * MS));
        assert_eq!(s.remaining(106 * MS + 1), Some(MS - 1));
        assert_eq!(s.remaining(107 * MS), None);
        assert_eq!(s.until_next(107 * MS), 7 * MS);
        assert_eq!(s.until_next(101 * MS), 3 * MS);
        // Before the anchor, the cycle runs backwards the same way.
        assert_eq!(s.remaining(95 * MS), Some(2 * MS));
        assert_eq!(s.until_next(99 * MS), 5 * MS);
    }

    #[test]
    fn a_process_launches_only_in_its_slot_and_only_what_fits() {
        let mut g = Gate::new(GateConfig::new(Ppm(100_000)), 0);
        let slot = Slot {
            anchor_ns: 0,
            cycle_ns: 10 * MS,
            offset_ns: 2 * MS,
            len_ns: 4 * MS,
        };
        g.set_slot(Some(slot));
        // Teach the estimator a 1 ms kernel.
        for _ in 0..3 {
            match g.admit(1, Kind::Kernel, 2 * MS) {
                Decision::Go(t) => g.measured(&t, Some(MS), 2 * MS),
                Decision::Wait(w) => panic!("waited {w}"),
            }
        }
        assert_eq!(
            g.admit(1, Kind::Kernel, MS),
            Decision::Wait(MS),
            "before the slot"
        );
        assert_eq!(
            g.admit(1, Kind::Kernel, 7 * MS),
            Decision::Wait(5 * MS),
            "after it"
        );
        // In the slot the share (10%) does not pace it: four 1 ms kernels fit.
        let mut went = 0;
        for _ in 0..8 {
            if let Decision::Go(t) = g.admit(1, Kind::Kernel, 2 * MS) {
                went += 1;
                g.completed(t.cum_ns);
            }
        }
        assert!(went >= 4, "{went}");
        // With 1.4 ms left one more 1 ms kernel goes (its queue starts
        // draining in the slot); with it in flight and 0.9 ms left, the next
        // waits for the next slot.
        let t = match g.admit(1, Kind::Kernel, 4 * MS + 6 * MS / 10) {
            Decision::Go(t) => t,
            d => panic!("{d:?}"),
        };
        assert_eq!(
            g.admit(1, Kind::Kernel, 5 * MS + MS / 10),
            Decision::Wait(6 * MS + 9 * MS / 10)
        );
        g.completed(t.cum_ns);
        g.set_slot(None);
        assert!(matches!(
            g.admit(1, Kind::Kernel, 20 * MS),
            Decision::Go(_) | Decision::Wait(_)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    /// A share just below the whole device: paced by the bucket and the
    /// in-flight bound (the whole device is not paced).
    const PACED: Ppm = Ppm(999_000);

    /// A deterministic single-tenant device: FIFO, exact durations. The host
    /// loop launches as fast as the gate allows, measures completions at the
    /// poll times, and we compare device time used with the share.
    fn run(share: u32, durations: &[(u64, u64)], horizon: u64) -> f64 {
        run_with(GateConfig::new(Ppm(share)), durations, horizon, None).busy
    }

    /// What the device saw in [`run_with`].
    struct Seen {
        /// Busy fraction after the warm-up.
        busy: f64,
        /// Longest stretch of back-to-back work after the warm-up.
        longest_run_ns: u64,
    }

    /// [`run`] with any configuration and a launching thread that, every
    /// `period`, is kept off the CPU for `len` (`stalls`: a CPU-limited pod,
    /// a loaded node), also reporting the longest run of the device.
    fn run_with(
        cfg: GateConfig,
        durations: &[(u64, u64)],
        horizon: u64,
        stalls: Option<(u64, u64)>,
    ) -> Seen {
        let mut g = Gate::new(cfg, 0);
        let mut now = 0u64;
        let (mut run_start, mut longest_run_ns) = (0u64, 0u64);
        let mut next_stall = stalls.map_or(u64::MAX, |(period, _)| period);
        let mut device_free_at = 0u64;
        let mut inflight: Vec<(Ticket, u64)> = Vec::new(); // (ticket, completion time)
        let mut busy = 0u64;
        let warmup = 200 * MS;
        let mut i = 0usize;
        while now < horizon {
            if now >= next_stall {
                let (period, len) = stalls.unwrap();
                now += len;
                next_stall += period;
            }
            // Completions up to now, seen only through measurements and fences.
            inflight.retain(|(t, done)| {
                if *done > now {
                    return true;
                }
                if t.sample {
                    g.measured(t, Some(t_true(t)), now);
                } else if t.fence {
                    g.completed(t.cum_ns);
                }
                false
            });
            let (key, dur) = durations[i % durations.len()];
            match g.admit(key, Kind::Kernel, now) {
                Decision::Go(t) => {
                    let start = device_free_at.max(now);
                    if now >= device_free_at {
                        // Its queue had drained: a neighbour waiting for
                        // the device would have had it.
                        run_start = start;
                    }
                    device_free_at = start + dur;
                    if start >= warmup && start < horizon {
                        busy += dur.min(horizon - start);
                        longest_run_ns = longest_run_ns.max(device_free_at - run_start);
                    }
                    TRUE.with(|m| m.borrow_mut().insert(t.cum_ns, dur));
                    inflight.push((t, device_free_at));
                    now += 2 * US; // host cost of a launch
                    i += 1;
                }
                Decision::Wait(w) => now += w.max(1),
            }
        }
        Seen {
            busy: busy as f64 / (horizon - warmup) as f64,
            longest_run_ns,
        }
    }

    /// The whole device is not paced: its queue rides out its thread's
    /// delays as the program's own queue would without tslice, where a
    /// share just below it (a short queue, the bucket's burst) leaves the
    /// device idle for most of each delay.
    #[test]
    fn a_process_with_the_whole_device_keeps_it_busy_through_host_stalls() {
        let stalls = Some((25 * MS, 8 * MS));
        let kernels = [(1, 200 * US)];
        let whole = run_with(
            GateConfig::new(Ppm(1_000_000)),
            &kernels,
            3_000 * MS,
            stalls,
        )
        .busy;
        let paced = run_with(GateConfig::new(Ppm(999_000)), &kernels, 3_000 * MS, stalls).busy;
        assert!(whole > 0.995, "whole device: {whole}");
        assert!(paced < 0.85, "paced just below it: {paced}");
        assert!(run(1_000_000, &kernels, 3_000 * MS) > 0.995);
    }

    /// A paced process with half of the device or more that spends banked
    /// time (its launching thread was held up, as on a loaded host) does so
    /// in runs of at most its run cap, not in one run of its whole burst: a
    /// latency-sensitive neighbour arriving meanwhile would otherwise wait a
    /// whole timeslice. Its share is unchanged, with and without stalls.
    #[test]
    fn banked_time_is_spent_in_short_runs_at_the_same_share() {
        let stalls = Some((10 * MS, 2 * MS));
        let kernels = [(1, 100 * US)];
        for (share, cap) in [(500_000, 500 * US), (600_000, 750 * US)] {
            let cfg = GateConfig::new(Ppm(share));
            assert_eq!(Gate::new(cfg.clone(), 0).run_cap_ns(), cap);
            let uncapped = GateConfig {
                run_ns: u64::MAX / 4,
                ..cfg.clone()
            };
            let before = run_with(uncapped.clone(), &kernels, 2_000 * MS, stalls);
            assert!(before.longest_run_ns >= 2 * MS, "{}", before.longest_run_ns);
            for s in [stalls, None] {
                let got = run_with(cfg.clone(), &kernels, 2_000 * MS, s);
                let want = run_with(uncapped.clone(), &kernels, 2_000 * MS, s).busy;
                assert!(
                    got.longest_run_ns <= cap,
                    "{share}: a run of {} ns",
                    got.longest_run_ns
                );
                assert!(
                    (got.busy - want).abs() < 0.005,
                    "{share} {s:?}: {} vs {want}",
                    got.busy
                );
            }
        }
        let g = |share| Gate::new(GateConfig::new(Ppm(share)), 0).run_cap_ns();
        assert_eq!(g(650_000), 928_571);
        for uncapped in [672_000, 700_000, 999_999, 1_000_000] {
            assert_eq!(g(uncapped), u64::MAX, "{uncapped}");
        }
    }

    /// Work queued while the process had the whole device counts toward
    /// the run it is in when its share drops to a capped one: it does not
    /// add a whole run on top. `run_ns` 0 turns runs off.
    #[test]
    fn a_run_counts_what_was_queued_before_the_share_dropped() {
        let mut g = Gate::new(GateConfig::new(Ppm::ONE), 0);
        let Decision::Go(first) = g.admit(1, Kind::Kernel, 0) else {
            panic!()
        };
        g.measured(&first, Some(400 * US), 0);
        for _ in 0..3 {
            assert!(matches!(g.admit(1, Kind::Kernel, 0), Decision::Go(_)));
        }
        g.set_share(Ppm(550_000), 0);
        assert_eq!(g.run_cap_ns(), 611_111);
        assert!(matches!(g.admit(1, Kind::Kernel, 0), Decision::Wait(_)));
        assert_eq!(g.stats().waits_run, 1);
        // Once all of it is known complete, a new run starts.
        g.completed(g.submitted_ns());
        assert!(matches!(g.admit(1, Kind::Kernel, 0), Decision::Go(_)));
        let off = GateConfig {
            run_ns: 0,
            ..GateConfig::new(Ppm(550_000))
        };
        assert_eq!(Gate::new(off, 0).run_cap_ns(), u64::MAX);
    }

    /// Not paced, yet charged: the whole device queues up to its bound with
    /// no wait for the bucket; what it queued ahead is its debt when its
    /// share drops (another tenant arrived), and a slot paces it again.
    #[test]
    fn the_whole_device_queues_ahead_and_pays_when_its_share_drops() {
        let mut g = Gate::new(GateConfig::new(Ppm::ONE), 0);
        let Decision::Go(first) = g.admit(1, Kind::Kernel, 0) else {
            panic!()
        };
        g.measured(&first, Some(MS), 0);
        let mut n = 0;
        while let Decision::Go(_) = g.admit(1, Kind::Kernel, 0) {
            n += 1;
        }
        assert_eq!(n, 20, "20 ms of 1 ms launches, past the 2 ms burst");
        assert_eq!(g.stats().waits_budget, 0);
        assert_eq!(g.stats().waits_inflight, 1);
        // Half of it has run when the share drops to 25%: the rest drains
        // (now past the 2 ms bound), then 6.5 ms of debt are paid at 25%
        // and a quantum (1 ms) earned for its first turn.
        g.set_share(Ppm(250_000), 10 * MS);
        g.completed(10 * MS);
        assert_eq!(g.admit(1, Kind::Kernel, 10 * MS), Decision::Wait(50 * US));
        g.completed(g.submitted_ns());
        match g.admit(1, Kind::Kernel, 20 * MS) {
            Decision::Wait(w) => assert_eq!(w, 30 * MS),
            d => panic!("{d:?}"),
        }
        // Back to the whole device while waiting for its turn: it goes at
        // once (nothing paces it; its debt is kept).
        g.set_share(Ppm::ONE, 20 * MS);
        assert!(matches!(g.admit(1, Kind::Kernel, 20 * MS), Decision::Go(_)));
        // With a slot it is paced again: not before the slot opens, and in
        // it only what ends by the slot's end.
        g.completed(g.submitted_ns());
        g.set_slot(Some(Slot {
            anchor_ns: 0,
            cycle_ns: 10 * MS,
            offset_ns: 5 * MS,
            len_ns: 2 * MS,
        }));
        assert_eq!(g.admit(1, Kind::Kernel, 100 * MS), Decision::Wait(5 * MS));
        let mut went = 0;
        while let Decision::Go(_) = g.admit(1, Kind::Kernel, 105 * MS) {
            went += 1;
        }
        assert_eq!(went, 2, "two 1 ms kernels in a 2 ms slot");
    }

    /// Measurements of overlapping streams can charge more than the device's
    /// time: the whole device's debt stays at most what it has queued ahead,
    /// so a drop of its share later does not starve it for what it was
    /// overcharged.
    #[test]
    fn the_whole_devices_debt_is_at_most_what_it_queued_ahead() {
        let mut g = Gate::new(GateConfig::new(Ppm::ONE), 0);
        let mut now = 0;
        for _ in 0..1000 {
            match g.admit(1, Kind::Kernel, now) {
                // Every launch completes within the millisecond, and every
                // measured one spans 3 ms (two other streams' kernels).
                Decision::Go(t) if t.sample => g.measured(&t, Some(3 * MS), now),
                Decision::Go(t) => g.completed(t.cum_ns),
                Decision::Wait(w) => panic!("the whole device waited {w}"),
            }
            now += MS;
        }
        g.completed(g.submitted_ns());
        g.set_share(Ppm(500_000), now);
        match g.admit(1, Kind::Kernel, now) {
            Decision::Wait(w) => assert!(w <= 8 * MS, "{w}"),
            Decision::Go(_) => {}
        }
    }

    /// A held process does not count as waiting for completions (a long
    /// hold is not a stall of its GPU work).
    #[test]
    fn a_hold_is_not_a_wait_for_completions() {
        let mut g = Gate::new(GateConfig::new(Ppm(200_000)), 0);
        assert!(matches!(g.admit(1, Kind::Kernel, 0), Decision::Go(_)));
        assert_eq!(g.admit(1, Kind::Kernel, 0), Decision::Wait(50 * US));
        assert!(g.waiting_on_completions(), "probation");
        g.hold_until(30 * MS);
        assert_eq!(g.admit(1, Kind::Kernel, 0), Decision::Wait(30 * MS));
        assert!(!g.waiting_on_completions());
    }

    /// With the whole device, completions are fenced every quarter of its
    /// deeper bound (a few fences per queue, not one per 500 us).
    #[test]
    fn the_whole_device_fences_every_quarter_of_its_bound() {
        let mut g = Gate::new(GateConfig::new(Ppm::ONE), 0);
        for _ in 0..3 {
            let Decision::Go(t) = g.admit(1, Kind::Kernel, 0) else {
                panic!()
            };
            g.measured(&t, Some(100 * US), 0);
        }
        let (mut fences, mut samples) = (0, 0);
        while let Decision::Go(t) = g.admit(1, Kind::Kernel, 0) {
            fences += t.fence as u32;
            samples += t.sample as u32;
        }
        // 200 launches of 100 us: a sample in 32 (3.2 ms apart), each of
        // which marks completions as a fence does, so no fence is due
        // (every 5 ms); a fence every 500 us would make 40.
        assert_eq!(samples, 6);
        assert!(fences <= 1, "{fences} fences in 20 ms");
    }

    thread_local! {
        static TRUE: std::cell::RefCell<std::collections::HashMap<u64, u64>> = Default::default();
    }
    fn t_true(t: &Ticket) -> u64 {
        TRUE.with(|m| m.borrow()[&t.cum_ns])
    }

    #[test]
    fn saturating_tenant_gets_its_share() {
        for (share, durs) in [
            (300_000, vec![(1, 200 * US)]),
            (300_000, vec![(1, 10 * US), (2, 5 * MS)]),
            (100_000, vec![(1, 50 * US)]),
            (700_000, vec![(1, MS), (2, 30 * US)]),
            (250_000, vec![(5, 3 * MS)]),
        ] {
            let got = run(share, &durs, 3_000 * MS);
            let want = share as f64 / 1e6;
            assert!(
                (got - want).abs() < 0.01,
                "share {want}: got {got} with {durs:?}"
            );
        }
    }

    #[test]
    fn unknown_kernels_are_not_queued_blindly() {
        let mut g = Gate::new(GateConfig::new(PACED), 0);
        let Decision::Go(t) = g.admit(9, Kind::Kernel, 0) else {
            panic!()
        };
        assert!(t.sample);
        assert_eq!(
            g.admit(9, Kind::Kernel, 0),
            Decision::Wait(50 * US),
            "probation"
        );
        let Decision::Go(t10) = g.admit(10, Kind::Kernel, 0) else {
            panic!("other keys are not held up")
        };
        g.measured(&t, Some(5 * MS), 5 * MS);
        g.measured(&t10, Some(10 * US), 5 * MS);
        assert!(
            matches!(g.admit(9, Kind::Kernel, 5 * MS), Decision::Wait(_)),
            "the 4.9 ms correction is a debt"
        );
        assert!(matches!(g.admit(9, Kind::Kernel, 10 * MS), Decision::Go(_)));
    }

    #[test]
    fn inflight_is_bounded() {
        let mut cfg = GateConfig::new(PACED);
        cfg.burst_ns = 100 * MS;
        let mut g = Gate::new(cfg, 0);
        let Decision::Go(first) = g.admit(1, Kind::Kernel, 0) else {
            panic!()
        };
        g.measured(&first, Some(500 * US), 0);
        let mut n = 0;
        while let Decision::Go(_) = g.admit(1, Kind::Kernel, 0) {
            n += 1;
        }
        assert_eq!(n, 4, "2 ms of 500 us launches");
        assert_eq!(g.inflight_ns(), 2 * MS);
        assert_eq!(g.stats().waits_inflight, 1);
        g.completed(g.submitted_ns);
        assert!(matches!(g.admit(1, Kind::Kernel, 0), Decision::Go(_)));

        // Cheap unmeasured launches get fences every quarter of the bound,
        // and work after the last completed fence never blocks the next launch.
        let mut g = Gate::new(
            GateConfig {
                burst_ns: 100 * MS,
                ..GateConfig::new(PACED)
            },
            0,
        );
        for _ in 0..3 {
            let Decision::Go(t) = g.admit(3, Kind::Kernel, 0) else {
                panic!()
            };
            g.measured(&t, Some(100 * US), 0);
        }
        let mut fences = Vec::new();
        let mut unmarked = 0;
        for _ in 0..20 {
            match g.admit(3, Kind::Kernel, 0) {
                Decision::Go(t) if t.fence => fences.push(t),
                Decision::Go(t) if t.sample => g.measured(&t, Some(100 * US), 0),
                Decision::Go(_) => unmarked += 1,
                Decision::Wait(_) => break,
            }
        }
        assert!(!fences.is_empty() && unmarked > 0);
        for f in &fences {
            g.completed(f.cum_ns);
        }
        assert!(matches!(g.admit(3, Kind::Kernel, 0), Decision::Go(_)));
        // One launch larger than the bound is let through when nothing is in flight.
        let mut g = Gate::new(GateConfig::new(PACED), 0);
        let Decision::Go(t) = g.admit(2, Kind::Graph, 0) else {
            panic!()
        };
        g.measured(&t, Some(50 * MS), 0);
        assert!(
            matches!(g.admit(2, Kind::Graph, 0), Decision::Wait(_)),
            "in debt"
        );
        assert!(matches!(g.admit(2, Kind::Graph, 100 * MS), Decision::Go(_)));
    }

    /// A tight 200 us kernel whose every fifth sample spans a foreign turn is
    /// charged 200 us each; but a tenant cannot be forgiven more than one
    /// turn per timeslice of its own time, nor more than one turn per sample.
    #[test]
    fn preemption_is_forgiven_within_physical_bounds() {
        let mut g = Gate::new(
            GateConfig {
                burst_ns: 1_000 * MS,
                ..GateConfig::new(PACED)
            },
            0,
        );
        let run = |g: &mut Gate, x: u64| {
            let Decision::Go(t) = g.admit(1, Kind::Kernel, 0) else {
                panic!()
            };
            if t.sample {
                g.measured(&t, Some(x), 0);
            } else {
                g.completed(t.cum_ns);
            }
        };
        for _ in 0..16 {
            run(&mut g, 200 * US);
        }
        let before = g.stats();
        for i in 0..100 {
            run(&mut g, if i % 5 == 4 { 580 * US } else { 200 * US });
        }
        let s = g.stats();
        assert_eq!(s.forgiven_samples - before.forgiven_samples, 20);
        assert_eq!(s.charged_ns - before.charged_ns, 100 * 200 * US);

        // Every other sample 2 ms longer: only one turn per own timeslice,
        // each at most one turn (1024 + 2 x 100 us).
        let mut g = Gate::new(
            GateConfig {
                burst_ns: 1_000 * MS,
                ..GateConfig::new(PACED)
            },
            0,
        );
        for _ in 0..16 {
            run(&mut g, 200 * US);
        }
        let before = g.stats();
        for i in 0..1000 {
            run(&mut g, if i % 4 == 3 { 2_200 * US } else { 200 * US });
        }
        let s = g.stats();
        let own = 1000 * 200 * US;
        assert!(s.forgiven_samples - before.forgiven_samples <= own / (1_024 * US) + 1);
        assert!(
            s.forgiven_ns - before.forgiven_ns
                <= (s.forgiven_samples - before.forgiven_samples) * 1_224 * US
        );
    }

    /// A saturating tenant at a low share runs in turns of about a quantum,
    /// not one kernel at a time.
    #[test]
    fn throttled_tenants_run_in_turns() {
        let mut g = Gate::new(GateConfig::new(Ppm(200_000)), 0);
        let mut now = 0;
        let mut turns: Vec<u64> = Vec::new(); // estimated work per turn
        let mut last_go = None;
        for _ in 0..3000 {
            match g.admit(1, Kind::Kernel, now) {
                Decision::Go(t) => {
                    if t.sample {
                        g.measured(&t, Some(100 * US), now);
                    } else {
                        g.completed(t.cum_ns);
                    }
                    if last_go != Some(now) && last_go.is_none_or(|l| now - l > 150 * US) {
                        turns.push(0);
                    }
                    *turns.last_mut().unwrap() += 100 * US;
                    last_go = Some(now);
                    now += 100 * US; // the kernel runs while the next is launched
                }
                Decision::Wait(w) => now += w,
            }
        }
        let q = g.config().quantum_ns;
        let steady = &turns[4..turns.len() - 1];
        assert!(
            steady.iter().all(|&t| (q..=q + 100 * US).contains(&t)),
            "{steady:?}"
        );
    }

    /// A minority tenant does not start a turn before its previous one has
    /// completed, however long the GPU takes to run it; a majority tenant
    /// keeps its queue full.
    #[test]
    fn turns_wait_for_the_previous_turn_unless_majority() {
        let mut g = Gate::new(
            GateConfig {
                burst_ns: MS,
                ..GateConfig::new(Ppm(250_000))
            },
            0,
        );
        let mut now = 0;
        let mut pending = Vec::new();
        // Warm the estimate, then spend the burst and one turn.
        loop {
            match g.admit(1, Kind::Kernel, now) {
                Decision::Go(t) => {
                    if t.sample && g.est.on_probation(1) {
                        g.measured(&t, Some(100 * US), now);
                    } else {
                        pending.push(t);
                    }
                }
                Decision::Wait(_) if g.throttled => break,
                Decision::Wait(w) => now += w,
            }
        }
        // Plenty of time for the bucket, but the turn has not completed.
        now += 100 * MS;
        assert!(matches!(g.admit(1, Kind::Kernel, now), Decision::Wait(_)));
        for t in pending.drain(..) {
            if t.sample {
                g.measured(&t, Some(100 * US), now);
            } else if t.fence {
                g.completed(t.cum_ns);
            }
        }
        assert!(matches!(g.admit(1, Kind::Kernel, now), Decision::Go(_)));

        let mut g = Gate::new(
            GateConfig {
                burst_ns: MS,
                ..GateConfig::new(Ppm(700_000))
            },
            0,
        );
        assert!(!g.takes_turns());
        let mut now = 0;
        let mut launched = 0;
        // The device runs each 100 us launch in order; fences and samples
        // are seen complete once it has run them.
        let (mut device_free_at, mut marks) = (0, Vec::new());
        while now < 10 * MS {
            marks.retain(|&(cum, done)| {
                if done > now {
                    return true;
                }
                g.completed(cum);
                false
            });
            match g.admit(2, Kind::Kernel, now) {
                Decision::Go(t) => {
                    launched += 1;
                    device_free_at = device_free_at.max(now) + 100 * US;
                    if t.sample && g.est.on_probation(2) {
                        g.measured(&t, Some(100 * US), now);
                    } else if t.sample || t.fence {
                        marks.push((t.cum_ns, device_free_at));
                    }
                }
                Decision::Wait(w) => now += w,
            }
        }
        assert!(
            launched >= 70,
            "the majority tenant keeps launching at its rate: {launched}"
        );
    }

    /// A failed launch that was to carry the fence of a turn must not leave
    /// the next turn waiting for a completion that will never be reported.
    #[test]
    fn a_failed_marked_launch_does_not_block_the_next_turn() {
        let mut g = Gate::new(
            GateConfig {
                burst_ns: MS,
                ..GateConfig::new(Ppm(300_000))
            },
            0,
        );
        // Learn a cheap kernel so that most launches are neither sampled nor fenced.
        for _ in 0..3 {
            let Decision::Go(t) = g.admit(1, Kind::Kernel, 0) else {
                panic!()
            };
            g.measured(&t, Some(10 * US), 0);
        }
        let mut now = 0;
        let mut cancelled = false;
        for _ in 0..20_000 {
            match g.admit(1, Kind::Kernel, now) {
                Decision::Go(t) if (t.fence || t.sample) && !cancelled => {
                    g.cancel(&t, now); // the launch failed: no event was recorded
                    cancelled = true;
                }
                Decision::Go(t) if t.sample => g.measured(&t, Some(10 * US), now),
                Decision::Go(t) if t.fence => g.completed(t.cum_ns),
                Decision::Go(_) => {}
                Decision::Wait(w) => {
                    assert!(!g.waiting_on_completions() || g.inflight_ns() > 0);
                    now += w;
                }
            }
        }
        assert!(cancelled);
        assert!(
            now > 500 * MS,
            "time moves: the tenant is paced, not stuck at {now}"
        );
        assert!(g.stats().launches > 10_000);
    }

    #[test]
    fn force_complete_ends_every_completion_wait() {
        let mut g = Gate::new(GateConfig::new(Ppm(200_000)), 0);
        let Decision::Go(_lost) = g.admit(5, Kind::Kernel, 0) else {
            panic!()
        };
        assert!(matches!(g.admit(5, Kind::Kernel, 0), Decision::Wait(_)));
        assert!(g.waiting_on_completions(), "probation");
        let before = g.progress();
        g.force_complete();
        assert!(g.progress() > before);
        assert!(matches!(g.admit(5, Kind::Kernel, 0), Decision::Go(_)));
    }

    #[test]
    fn hold_and_cancel() {
        let mut g = Gate::new(GateConfig::new(Ppm(500_000)), 0);
        g.hold_until(MS);
        assert_eq!(g.admit(1, Kind::Kernel, 0), Decision::Wait(MS));
        let Decision::Go(t) = g.admit(1, Kind::Kernel, MS) else {
            panic!()
        };
        assert_eq!(g.inflight_ns(), t.cost_ns);
        g.cancel(&t, MS);
        assert_eq!(g.inflight_ns(), 0);
        assert_eq!(g.stats().charged_ns, 0);
        assert!(
            !g.est.on_probation(1),
            "a cancelled measurement ends probation's wait"
        );
    }
}

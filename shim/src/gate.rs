//! The compute gate at every launch: waits on the launching thread until the
//! process's GPU-time budget on the device allows the launch, and measures a
//! sample of launches with events to correct the budget and the estimates.
//!
//! The decisions are `tslice_policy::gate::Gate`'s; this module owns the
//! driver side: the lock around the gate, timing events (recorded on the
//! launch's own stream around measured launches, fences after others),
//! polling them, and sleeping. Nothing blocks while the lock is held except
//! `cuEventQuery`/`cuEventElapsedTime`, which do not block.

use crate::broker::Broker;
use crate::real;
use cuda_abi::*;
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tslice_policy::estimate::Kind;
use tslice_policy::gate::{Decision, Gate, GateConfig, GateStats, Slot, Ticket};
use tslice_policy::quota::Ppm;

/// Shortest and longest single sleep while waiting (then the gate is asked again).
const MIN_SLEEP_NS: u64 = 10_000;
const MAX_SLEEP_NS: u64 = 2_000_000;
/// On the launch fast path, completions are looked for every this many
/// launches (and on every wait): polling reads the clock and queries events.
const POLL_EVERY_LAUNCHES: u32 = 16;
/// Free events kept per gate.
const POOL_MAX: usize = 64;
/// A launch that has waited for completions without any being reported
/// gives up on them (see `Gate::force_complete`): GPU work may wait for
/// something its host does after the next launch, and the gate must not turn
/// that into a deadlock. Its patience is [`stall_patience_ns`]: at least
/// this long, more with more work in flight, and twice as long after each
/// time a completion it had given up on arrived after all.
const STALL_NS: u64 = 50_000_000;
/// Most patience: a wedged context costs its process this long per stall.
const STALL_MAX_NS: u64 = 5_000_000_000;
/// In-flight work may take this many times its estimate of wall time (other
/// tenants' turns under time-slicing) before it looks stalled.
const STALL_INFLIGHT_FACTOR: u64 = 8;

/// How long a launch waits for completions before it stops waiting for
/// them: `floor` (which grows after false alarms), or the estimated work in
/// flight stretched by what time-slicing can add, whichever is longer.
fn stall_patience_ns(floor: u64, inflight_ns: u64) -> u64 {
    floor
        .max(inflight_ns.saturating_mul(STALL_INFLIGHT_FACTOR))
        .min(STALL_MAX_NS)
}

struct Pending {
    t: Ticket,
    /// Null for a fence.
    start: CUevent,
    end: CUevent,
    ctx: CUcontext,
}

struct Inner {
    gate: Gate,
    pending: VecDeque<Pending>,
    /// Free events: (context, event, has timing).
    pool: Vec<(CUcontext, CUevent, bool)>,
    since_poll: u32,
    /// Least patience before giving up on completions (doubles after each
    /// false alarm).
    stall_floor_ns: u64,
    /// Work submitted when the gate last gave up on completions: a later
    /// completion of work up to here proves that stall was a false alarm.
    forced_upto_ns: u64,
    /// The budget page (its address) and generation last applied.
    applied: (usize, u64),
}

// SAFETY: the raw CUevent/CUcontext handles inside are plain driver handles,
// valid from any thread; access is serialised by the Mutex.
unsafe impl Send for Inner {}

/// What `tslice_get_device_stats` reports of a gate.
pub struct DeviceGateStats {
    pub share_ppm: u32,
    pub gate: GateStats,
    pub waited_ns: u64,
    pub throttled: u64,
}

pub struct DeviceGate {
    inner: Mutex<Inner>,
    waited_ns: AtomicU64,
    throttled: AtomicU64,
    /// Under a broker: its connection and this device's ordinal (the share
    /// and holds come from the budget page; counters go to the process page).
    link: Option<(&'static Broker, usize)>,
    /// The process's own share from the environment (the broker's can only
    /// be lowered by it).
    cap: Ppm,
}

impl DeviceGate {
    pub fn new(cfg: GateConfig, link: Option<(&'static Broker, usize)>, cap: Ppm) -> DeviceGate {
        DeviceGate {
            link,
            cap,
            inner: Mutex::new(Inner {
                applied: (0, u64::MAX),
                gate: Gate::new(cfg, real::now_ns()),
                pending: VecDeque::new(),
                pool: Vec::new(),
                since_poll: 0,
                stall_floor_ns: STALL_NS,
                forced_upto_ns: 0,
            }),
            waited_ns: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The launch path under a broker: counts the launch (the broker's
    /// demand signal). Launches still pass the gate when the process has the
    /// device to itself: its in-flight bound is what lets a hold or another
    /// tenant's slot take effect once at most that much has drained (20 ms
    /// with the whole device, 2 ms otherwise; the broker never gives the
    /// whole device beside another tenant's latency-critical process).
    #[inline]
    pub fn count_launch(&self) {
        if let Some(p) = self.link.and_then(|(b, i)| b.process().dev.get(i)) {
            p.launches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies the broker's budget to the gate when it changed. The page is
    /// read as a sequence lock: `generation` is odd while the broker writes
    /// and changes with every update, so a read that saw either is dropped
    /// (and done again at the next launch) rather than applied half old,
    /// half new.
    fn sync(&self, inner: &mut Inner, now: &mut impl FnMut() -> u64) {
        let Some((b, i)) = self.link else { return };
        let page = b.budget();
        let gen = page.generation.load(Ordering::Acquire);
        // A page of another broker (after a reconnection) counts its own
        // generations: the page is part of what was applied.
        let which = page as *const _ as usize;
        if gen % 2 == 1 || inner.applied == (which, gen) {
            return;
        }
        let Some(d) = page.dev.get(i) else { return };
        let share = d.share_ppm.load(Ordering::Relaxed);
        let hold = d.hold_until_ns.load(Ordering::Relaxed);
        let slot = Slot {
            anchor_ns: d.slot_anchor_ns.load(Ordering::Relaxed),
            cycle_ns: d.slot_cycle_ns.load(Ordering::Relaxed),
            offset_ns: d.slot_offset_ns.load(Ordering::Relaxed),
            len_ns: d.slot_len_ns.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if page.generation.load(Ordering::Relaxed) != gen {
            return;
        }
        inner.applied = (which, gen);
        let share = Ppm(share.min(self.cap.0));
        if share != inner.gate.config().share {
            inner.gate.set_share(share, now());
        }
        inner.gate.hold_until(hold);
        inner.gate.set_slot((slot.len_ns > 0).then_some(slot));
    }

    /// Waits (sleeping on this thread) until a launch of `key` may go. The
    /// fast path (the budget plainly pays) reads no clock.
    pub fn admit(&self, key: u64, kind: Kind) -> Ticket {
        let mut wait_start: Option<u64> = None;
        // (since, progress) while waiting for completions that do not come.
        let mut stall: Option<(u64, u64)> = None;
        // Completions are polled every few launches; before a launch first
        // sleeps they are polled at once, and it is decided again (what it
        // waits for may have completed since the last poll).
        let mut poll_now = false;
        loop {
            let mut read: Option<u64> = None;
            let mut now = || *read.get_or_insert_with(real::now_ns);
            let (decision, on_completions, progress, patience, polled) = {
                let mut inner = self.lock();
                self.sync(&mut inner, &mut now);
                inner.since_poll += 1;
                let polled =
                    poll_now || wait_start.is_some() || inner.since_poll >= POLL_EVERY_LAUNCHES;
                if polled {
                    inner.since_poll = 0;
                    let t = now();
                    inner.poll(t);
                    if let Some(p) = self.link.and_then(|(b, i)| b.process().dev.get(i)) {
                        p.charged_ns
                            .store(inner.gate.stats().charged_ns, Ordering::Relaxed);
                    }
                }
                let d = inner.gate.admit_with(key, kind, &mut now);
                let patience = stall_patience_ns(inner.stall_floor_ns, inner.gate.inflight_ns());
                (
                    d,
                    inner.gate.waiting_on_completions(),
                    inner.gate.progress(),
                    patience,
                    polled,
                )
            };
            match decision {
                Decision::Go(t) => {
                    if let Some(start) = wait_start {
                        let waited = real::now_ns().saturating_sub(start);
                        self.waited_ns.fetch_add(waited, Ordering::Relaxed);
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                        if let Some(p) = self.link.and_then(|(b, i)| b.process().dev.get(i)) {
                            p.throttle_wait_ns.fetch_add(waited, Ordering::Relaxed);
                            p.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    return t;
                }
                Decision::Wait(_) if !polled && on_completions => {
                    poll_now = true;
                }
                Decision::Wait(w) => {
                    let t = now();
                    wait_start.get_or_insert(t);
                    stall = match stall {
                        _ if !on_completions => None,
                        Some((since, p))
                            if p == progress && t.saturating_sub(since) >= patience =>
                        {
                            crate::log::warn!(
                                "no GPU work of this process was seen completing for {} ms; the gate stops waiting for it",
                                patience / 1_000_000
                            );
                            let mut inner = self.lock();
                            inner.forced_upto_ns = inner.gate.submitted_ns();
                            inner.gate.force_complete();
                            None
                        }
                        Some((since, p)) if p == progress => Some((since, p)),
                        _ => Some((t, progress)),
                    };
                    std::thread::sleep(Duration::from_nanos(w.clamp(MIN_SLEEP_NS, MAX_SLEEP_NS)));
                }
            }
        }
    }

    /// After the real launch: records the measurement's end event or a
    /// fence on `stream`, or gives the cost back if the launch failed.
    /// `start` is the start event recorded before a measured launch.
    pub fn launched(
        &self,
        t: Ticket,
        result: CUresult,
        stream: CUstream,
        start: Option<(CUcontext, CUevent)>,
    ) {
        if !result.is_success() {
            let mut inner = self.lock();
            inner.gate.cancel(&t, real::now_ns());
            if let Some((ctx, ev)) = start {
                inner.recycle(ctx, ev, true);
            }
            return;
        }
        if !t.sample && !t.fence {
            return;
        }
        let timing = t.sample;
        let recorded = match (timing, start) {
            (true, None) => None, // the start event could not be recorded
            (_, s) => {
                let ctx = s.map(|s| s.0).or_else(|| real::ctx_get_current().ok());
                ctx.and_then(|ctx| {
                    let ev = self.take_event(ctx, timing)?;
                    match real::event_record(ev, stream) {
                        Ok(()) => Some((ctx, ev)),
                        Err(_) => {
                            real::event_destroy(ev);
                            None
                        }
                    }
                })
            }
        };
        let mut inner = self.lock();
        match recorded {
            Some((ctx, end)) => inner.pending.push_back(Pending {
                t,
                start: start.map_or(std::ptr::null_mut(), |s| s.1),
                end,
                ctx,
            }),
            None => {
                // No way to observe this launch: count it as complete and
                // its measurement as lost, so nothing waits for it.
                if let Some((ctx, ev)) = start {
                    inner.recycle(ctx, ev, true);
                }
                inner.gate.lost(&t, real::now_ns());
            }
        }
    }

    /// Records a start event for a measured launch on `stream`.
    pub fn record_start(&self, stream: CUstream) -> Option<(CUcontext, CUevent)> {
        let ctx = real::ctx_get_current().ok().filter(|c| !c.is_null())?;
        let ev = self.take_event(ctx, true)?;
        match real::event_record(ev, stream) {
            Ok(()) => Some((ctx, ev)),
            Err(_) => {
                real::event_destroy(ev);
                None
            }
        }
    }

    fn take_event(&self, ctx: CUcontext, timing: bool) -> Option<CUevent> {
        {
            let mut inner = self.lock();
            if let Some(i) = inner
                .pool
                .iter()
                .position(|&(c, _, t)| c == ctx && t == timing)
            {
                return Some(inner.pool.swap_remove(i).1);
            }
        }
        let flags = if timing {
            CU_EVENT_DEFAULT
        } else {
            CU_EVENT_DISABLE_TIMING
        };
        real::event_create(flags).ok()
    }

    /// The context was destroyed with its events: drop them from the pool,
    /// and count what they were to report as complete (and measurements lost).
    pub fn forget_context(&self, ctx: CUcontext) {
        let now = real::now_ns();
        let mut inner = self.lock();
        inner.pool.retain(|&(c, _, _)| c != ctx);
        let gone: Vec<Pending> = {
            let (keep, gone): (VecDeque<Pending>, VecDeque<Pending>) =
                std::mem::take(&mut inner.pending)
                    .into_iter()
                    .partition(|p| p.ctx != ctx);
            inner.pending = keep;
            gone.into_iter().collect()
        };
        for p in gone {
            inner.gate.lost(&p.t, now);
        }
    }

    pub fn stats(&self) -> DeviceGateStats {
        let inner = self.lock();
        DeviceGateStats {
            share_ppm: inner.gate.config().share.0,
            gate: inner.gate.stats(),
            waited_ns: self.waited_ns.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn recycle(&mut self, ctx: CUcontext, ev: CUevent, timing: bool) {
        if self.pool.len() < POOL_MAX {
            self.pool.push((ctx, ev, timing));
        } else {
            real::event_destroy(ev);
        }
    }

    /// Looks at every pending measurement and fence; feeds completions to the gate.
    fn poll(&mut self, now: u64) {
        if self.pending.is_empty() {
            return;
        }
        // Another thread may be capturing a graph in the global mode, where
        // an event query from this thread would invalidate its capture: ask
        // in the relaxed mode while any capture is in progress.
        let relaxed = crate::state::shim()
            .captures_active()
            .then(real::relax_capture_mode)
            .flatten();
        self.poll_events(now);
        if let Some(mode) = relaxed {
            real::restore_capture_mode(mode);
        }
    }

    fn poll_events(&mut self, now: u64) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            match real::event_query(p.end) {
                Ok(false) => {
                    i += 1;
                    continue;
                }
                Ok(true) => {
                    let p = self.pending.remove(i).expect("index checked");
                    if p.t.cum_ns <= self.forced_upto_ns {
                        // Work the gate had given up on completed after all:
                        // it was slow, not wedged. Be more patient next time.
                        self.forced_upto_ns = 0;
                        self.stall_floor_ns = (self.stall_floor_ns * 2).min(STALL_MAX_NS);
                    }
                    if p.start.is_null() {
                        self.gate.completed(p.t.cum_ns);
                        self.recycle(p.ctx, p.end, false);
                    } else {
                        let m = real::event_elapsed_ns(p.start, p.end).ok();
                        crate::log::debug!(
                            "measured launch: estimate {} ns, span {:?} ns",
                            p.t.cost_ns,
                            m
                        );
                        self.gate.measured(&p.t, m, now);
                        self.recycle(p.ctx, p.start, true);
                        self.recycle(p.ctx, p.end, true);
                    }
                }
                Err(_) => {
                    // The context went away (or the event is unusable): the
                    // work is gone, and so are the events.
                    let p = self.pending.remove(i).expect("index checked");
                    self.gate.lost(&p.t, now);
                    if !p.start.is_null() {
                        real::event_destroy(p.start);
                    }
                    real::event_destroy(p.end);
                }
            }
        }
    }
}

/// The estimation key of a kernel launch: the function and its geometry.
pub fn kernel_key(f: CUfunction, grid: [u32; 3], block: [u32; 3], shmem: u32) -> u64 {
    let mut h = f as u64;
    for x in grid
        .iter()
        .chain(block.iter())
        .chain(std::iter::once(&shmem))
    {
        h = (h ^ *x as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    h
}

/// The estimation key of a graph launch.
pub fn graph_key(exec: CUgraphExec) -> u64 {
    (exec as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 0x6772_6170_6800_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_patience_scales_with_work_in_flight_within_bounds() {
        assert_eq!(stall_patience_ns(STALL_NS, 0), STALL_NS);
        assert_eq!(
            stall_patience_ns(STALL_NS, 100_000),
            STALL_NS,
            "short work: the floor"
        );
        assert_eq!(
            stall_patience_ns(STALL_NS, 60_000_000),
            480_000_000,
            "a 60 ms kernel: 8 x"
        );
        assert_eq!(
            stall_patience_ns(4 * STALL_NS, 0),
            4 * STALL_NS,
            "a raised floor"
        );
        assert_eq!(stall_patience_ns(STALL_NS, u64::MAX), STALL_MAX_NS);
    }
}

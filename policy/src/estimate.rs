//! Launch cost estimation.
//!
//! The cost of a launch (nanoseconds of device time) is estimated per key: a
//! kernel's function and launch geometry, or a graph. Estimates start from a
//! default and follow measurements (an exponentially weighted mean). Which
//! launches get measured is decided here too: the first few of every key,
//! every launch whose estimate is large (measuring costs two event records,
//! negligible next to it), and one in `sample_every` of the rest.
//!
//! A key that has never been measured is on probation: while one of its
//! launches is being measured, no other may start, so an unknown 5 ms kernel
//! estimated at the default cannot be queued by the hundred.
//!
//! Measurements are wall-clock spans between two events on the launch's
//! stream. Under time-slicing a kernel preempted at the end of its context's
//! timeslice measures the other tenants' turn as well as its own run. For a
//! key whose durations are tight (at least 12 of its last [`WINDOW`] samples
//! within 12.5% of their median), a sample above the median by more than a
//! quarter is reported as a likely preemption ([`Observed::typical`]); the
//! gate decides how much of it to forgive (see `gate`). The raw value still
//! enters the window, so a kernel that really became slower moves the median
//! within a few samples, and keys whose durations vary are charged as
//! measured.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Keys are already hashes (the shim mixes function and geometry), so one
/// multiply spreads them well enough; SipHash would cost more than the rest
/// of a launch decision.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    Graph,
}

#[derive(Clone, Debug)]
pub struct EstimatorConfig {
    pub default_kernel_ns: u64,
    pub default_graph_ns: u64,
    /// Launches estimated at least this long are always measured.
    pub always_sample_ns: u64,
    /// Measure one in this many of the other launches of a key.
    pub sample_every: u32,
    /// Measurements a key needs before it stops being measured every time.
    pub warmup_samples: u32,
    /// Keys remembered; beyond this, arbitrary old keys are forgotten.
    pub max_keys: usize,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            default_kernel_ns: 100_000,
            default_graph_ns: 1_000_000,
            always_sample_ns: 200_000,
            sample_every: 32,
            warmup_samples: 3,
            max_keys: 8192,
        }
    }
}

/// Samples kept per key for the outlier test.
pub const WINDOW: usize = 16;
/// Samples of the window that must lie within 12.5% of the median for the
/// key to count as tight.
const TIGHT: usize = 12;

#[derive(Clone, Copy, Debug, Default)]
struct KeyStats {
    est_ns: u64,
    samples: u32,
    since_sample: u32,
    pending: u32,
    recent: [u64; WINDOW],
}

impl KeyStats {
    /// The median of the recent samples if the key is tight.
    fn tight_median(&self) -> Option<u64> {
        if (self.samples as usize) < WINDOW {
            return None;
        }
        let mut v = self.recent;
        v.sort_unstable();
        let med = v[WINDOW / 2];
        let near = v.iter().filter(|&&x| x.abs_diff(med) <= med / 8).count();
        (near >= TIGHT).then_some(med)
    }
}

/// A finished measurement, as the estimator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub measured_ns: u64,
    /// The key's typical duration, when the measurement stands out of a
    /// tight key's recent ones (likely a preempted run).
    pub typical: Option<u64>,
}

/// What the estimator says about the next launch of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub cost_ns: u64,
    /// Measure this launch.
    pub sample: bool,
}

#[derive(Debug)]
pub struct Estimator {
    cfg: EstimatorConfig,
    keys: HashMap<u64, KeyStats, BuildHasherDefault<KeyHasher>>,
    /// Every remembered key, oldest first: eviction takes from the front.
    order: VecDeque<u64>,
}

impl Estimator {
    pub fn new(cfg: EstimatorConfig) -> Estimator {
        Estimator {
            cfg,
            keys: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Forgets the oldest key that is not being measured, in O(1) amortized
    /// (a key being measured goes to the back and is tried again later; at
    /// most one pass over the table when every key is being measured).
    fn evict_one(&mut self) {
        for _ in 0..self.order.len() {
            let Some(old) = self.order.pop_front() else {
                return;
            };
            if self.keys.get(&old).is_some_and(|k| k.pending > 0) {
                self.order.push_back(old);
            } else {
                self.keys.remove(&old);
                return;
            }
        }
    }

    fn default_for(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Kernel => self.cfg.default_kernel_ns,
            Kind::Graph => self.cfg.default_graph_ns,
        }
    }

    /// The current estimate of a key, without committing to a launch.
    pub fn estimate(&self, key: u64, kind: Kind) -> u64 {
        self.peek(key, kind).1
    }

    /// True while the key has never been measured and a measurement of it is
    /// in flight: the next launch must wait for it.
    pub fn on_probation(&self, key: u64) -> bool {
        self.peek(key, Kind::Kernel).0
    }

    /// Whether the key is on probation, and its current estimate: one lookup.
    pub fn peek(&self, key: u64, kind: Kind) -> (bool, u64) {
        match self.keys.get(&key) {
            Some(k) if k.samples > 0 => (false, k.est_ns),
            Some(k) => (k.pending > 0, self.default_for(kind)),
            None => (false, self.default_for(kind)),
        }
    }

    /// Commits to a launch of `key`: its cost, and whether to measure it.
    pub fn plan(&mut self, key: u64, kind: Kind) -> Plan {
        if !self.keys.contains_key(&key) {
            if self.keys.len() >= self.cfg.max_keys {
                self.evict_one();
            }
            self.order.push_back(key);
        }
        let default = self.default_for(kind);
        let cfg = &self.cfg;
        let k = self.keys.entry(key).or_default();
        let cost_ns = if k.samples > 0 { k.est_ns } else { default };
        k.since_sample = k.since_sample.saturating_add(1);
        let sample = k.samples + k.pending < cfg.warmup_samples
            || cost_ns >= cfg.always_sample_ns
            || k.since_sample >= cfg.sample_every;
        if sample {
            k.since_sample = 0;
            k.pending += 1;
        }
        Plan { cost_ns, sample }
    }

    /// Forgets every measurement in flight (they will not be reported):
    /// probation ends for every key.
    pub fn abandon_pending(&mut self) {
        for k in self.keys.values_mut() {
            k.pending = 0;
        }
    }

    /// A measurement of `key` finished (`measured_ns` is None if it was lost,
    /// e.g. its launch failed or its events could not be read).
    pub fn observe(&mut self, key: u64, measured_ns: Option<u64>) -> Option<Observed> {
        let k = self.keys.get_mut(&key)?;
        k.pending = k.pending.saturating_sub(1);
        let x = measured_ns?;
        let typical = k
            .tight_median()
            .filter(|&med| x > med.saturating_add(med / 4));
        // The estimate follows the typical value, not the preempted one.
        let basis = typical.unwrap_or(x);
        k.est_ns = if k.samples == 0 {
            basis
        } else {
            // Weight 1/(n+1) for the first samples (a plain mean), then 1/8.
            let w = (k.samples as u64 + 1).min(8);
            let e = k.est_ns as i128 + (basis as i128 - k.est_ns as i128) / w as i128;
            e.max(0) as u64
        };
        k.recent[k.samples as usize % WINDOW] = x;
        k.samples = k.samples.saturating_add(1);
        Some(Observed {
            measured_ns: x,
            typical,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> Estimator {
        Estimator::new(EstimatorConfig::default())
    }

    #[test]
    fn unknown_keys_use_defaults_and_are_measured() {
        let mut e = est();
        assert_eq!(
            e.plan(1, Kind::Kernel),
            Plan {
                cost_ns: 100_000,
                sample: true
            }
        );
        assert!(e.on_probation(1));
        assert_eq!(e.estimate(2, Kind::Graph), 1_000_000);
        e.observe(1, Some(10_000));
        assert!(!e.on_probation(1));
        assert_eq!(e.estimate(1, Kind::Kernel), 10_000);
    }

    #[test]
    fn sampling_thins_out_for_cheap_kernels_but_not_expensive_ones() {
        let mut e = est();
        let mut sampled = 0;
        for _ in 0..1000 {
            let p = e.plan(7, Kind::Kernel);
            if p.sample {
                sampled += 1;
                e.observe(7, Some(10_000));
            }
        }
        // The warm-up samples, then one in `sample_every` (32).
        assert!((32..=36).contains(&sampled), "{sampled}");
        for _ in 0..100 {
            let p = e.plan(8, Kind::Kernel);
            assert!(p.sample, "a 5 ms kernel is measured every time");
            e.observe(8, Some(5_000_000));
        }
    }

    #[test]
    fn estimate_follows_measurements() {
        let mut e = est();
        for x in [100, 200, 300] {
            e.plan(1, Kind::Kernel);
            e.observe(1, Some(x));
        }
        assert_eq!(
            e.estimate(1, Kind::Kernel),
            200,
            "mean of the first samples"
        );
        for _ in 0..100 {
            e.plan(1, Kind::Kernel);
            e.observe(1, Some(1000));
        }
        assert!(e.estimate(1, Kind::Kernel) > 990);
        e.plan(1, Kind::Kernel);
        e.observe(1, None);
        assert!(
            e.estimate(1, Kind::Kernel) > 990,
            "a lost sample changes nothing"
        );
    }

    fn feed(e: &mut Estimator, key: u64, xs: &[u64]) -> Vec<Option<u64>> {
        xs.iter()
            .map(|&x| {
                e.plan(key, Kind::Kernel);
                e.observe(key, Some(x)).unwrap().typical
            })
            .collect()
    }

    #[test]
    fn preempted_samples_of_tight_keys_are_flagged() {
        let mut e = est();
        let base: Vec<u64> = (0..16).map(|i| 200_000 + (i % 3) * 1_000).collect();
        assert!(feed(&mut e, 1, &base).iter().all(Option::is_none));
        let flags = feed(&mut e, 1, &[200_000, 580_000, 201_000, 590_000]);
        assert_eq!(flags, [None, Some(201_000), None, Some(201_000)]);
        assert!(
            e.estimate(1, Kind::Kernel).abs_diff(200_000) < 2_000,
            "the estimate ignores them"
        );
    }

    #[test]
    fn a_real_change_in_duration_is_followed() {
        let mut e = est();
        feed(&mut e, 1, &[100_000; 16]);
        let flags = feed(&mut e, 1, &[300_000; 16]);
        assert!(flags[0].is_some(), "at first it looks like preemption");
        assert!(flags[15].is_none(), "then the key is no longer tight");
        assert!(flags.iter().filter(|f| f.is_some()).count() <= 5);
    }

    #[test]
    fn keys_whose_durations_vary_are_rarely_flagged() {
        // One function whose launches take 10 us or 5 ms at random: a run of
        // short ones can make the window look tight for a moment (the gate
        // bounds what such a flag can forgive), but not often.
        let mut e = est();
        let mut x = 7u32;
        let xs: Vec<u64> = (0..300)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if (x >> 16).is_multiple_of(2) {
                    10_000
                } else {
                    5_000_000
                }
            })
            .collect();
        let flagged = feed(&mut e, 1, &xs).iter().filter(|f| f.is_some()).count();
        assert!(flagged <= 9, "{flagged} of 300");
    }

    #[test]
    fn key_table_is_bounded() {
        let mut e = Estimator::new(EstimatorConfig {
            max_keys: 16,
            ..Default::default()
        });
        for k in 0..1000 {
            let p = e.plan(k, Kind::Kernel);
            if p.sample {
                e.observe(k, Some(1));
            }
        }
        assert!(e.keys.len() <= 16);
        assert_eq!(e.order.len(), e.keys.len(), "one order entry per key");
    }

    #[test]
    fn eviction_takes_the_oldest_key_not_being_measured() {
        let mut e = Estimator::new(EstimatorConfig {
            max_keys: 3,
            ..Default::default()
        });
        e.plan(1, Kind::Kernel); // measured: pending
        for k in [2, 3] {
            e.plan(k, Kind::Kernel);
            e.observe(k, Some(5));
        }
        e.plan(4, Kind::Kernel);
        assert!(e.keys.contains_key(&1), "key 1 is being measured: kept");
        assert!(!e.keys.contains_key(&2), "key 2 was the oldest idle one");
        assert!(e.keys.contains_key(&3) && e.keys.contains_key(&4));
        // Every key pending: the table may grow past the bound rather than
        // forget a measurement in flight.
        let mut e = Estimator::new(EstimatorConfig {
            max_keys: 2,
            ..Default::default()
        });
        for k in 0..4 {
            e.plan(k, Kind::Kernel);
        }
        assert_eq!(e.keys.len(), 4);
        assert_eq!(e.order.len(), 4);
    }
}

//! The per-device memory ledger of one process: a cap, what is reserved, the
//! high-water mark, and how many allocations were refused.
//!
//! Reservation happens *before* the driver allocates, with one atomic
//! compare-and-swap on the *credit* (what may still be reserved), and is
//! rolled back if the driver fails. Two threads can therefore never both
//! pass the check and together exceed the cap (the race that lets
//! HAMi-core admit 600+600 MiB under a 1 GiB cap).
//!
//! The credit is what moves: standalone, it is the cap less what is used
//! (a cap lowered below what is held makes it negative, so allocations are
//! refused until frees bring it back; nothing is taken away); under the
//! broker, it is what the broker granted this process and it has not used
//! yet ([`MemLedger::grant`], [`MemLedger::take_back`]), and the cap is only
//! shown ([`MemLedger::show_limit`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Allocation granularity tslice charges with: every allocation is rounded up
/// to a 2 MiB page, as the driver maps device memory in 2 MiB pages.
pub const GRANULARITY: u64 = 2 << 20;

/// What an allocation of `bytes` is charged.
pub fn charge_for(bytes: u64) -> u64 {
    bytes.div_ceil(GRANULARITY).saturating_mul(GRANULARITY)
}

/// Bytes of an array `width x height x depth` (0 counts as 1) of `channels`
/// channels of `channel_bytes` each.
pub fn array_bytes(width: u64, height: u64, depth: u64, channels: u64, channel_bytes: u64) -> u64 {
    width
        .max(1)
        .saturating_mul(height.max(1))
        .saturating_mul(depth.max(1))
        .saturating_mul(channels.max(1))
        .saturating_mul(channel_bytes)
}

/// Bytes of a mipmapped array: the sum over `levels` levels, each halving
/// every non-zero dimension (minimum 1).
pub fn mipmapped_bytes(
    width: u64,
    height: u64,
    depth: u64,
    levels: u32,
    channels: u64,
    channel_bytes: u64,
) -> u64 {
    let (mut w, mut h, mut d) = (width, height, depth);
    let mut total = 0u64;
    for _ in 0..levels.max(1) {
        total = total.saturating_add(array_bytes(w, h, d, channels, channel_bytes));
        w = (w / 2).max(1);
        h = if h == 0 { 0 } else { (h / 2).max(1) };
        d = if d == 0 { 0 } else { (d / 2).max(1) };
    }
    total
}

/// Refusal of a reservation: the cap and what was already reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
}

/// A memory cap and the reservations against it. All methods are lock-free.
#[derive(Debug)]
pub struct MemLedger {
    /// The cap (saturated at `i64::MAX`, which means none).
    limit: AtomicU64,
    /// What may still be reserved (may be negative after a cap is lowered).
    credit: AtomicI64,
    used: AtomicU64,
    peak: AtomicU64,
    denials: AtomicU64,
}

impl Default for MemLedger {
    fn default() -> Self {
        MemLedger::new(u64::MAX)
    }
}

/// Caps are kept below `i64::MAX` so that credit arithmetic cannot overflow.
const fn clamp(x: u64) -> u64 {
    if x > i64::MAX as u64 {
        i64::MAX as u64
    } else {
        x
    }
}

impl MemLedger {
    pub const fn new(limit: u64) -> MemLedger {
        MemLedger {
            limit: AtomicU64::new(limit),
            credit: AtomicI64::new(clamp(limit) as i64),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            denials: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the cap, moving the credit by the difference (atomically with
    /// respect to reservations). Reservations already held stay; a cap below
    /// them refuses new ones until enough is released.
    pub fn set_limit(&self, limit: u64) {
        let old = self.limit.swap(limit, Ordering::AcqRel);
        let delta = clamp(limit) as i128 - clamp(old) as i128;
        let _ = self
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some((c as i128 + delta).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
            });
    }

    /// Changes the cap as shown (`limit()`, meminfo) without touching the
    /// credit: under the broker, the credit is what it granted.
    pub fn show_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Adds `bytes` the broker granted to the credit.
    pub fn grant(&self, bytes: u64) {
        self.credit.fetch_add(clamp(bytes) as i64, Ordering::AcqRel);
    }

    /// Takes `bytes` of unused credit back (to return it to the broker), if
    /// there is that much.
    pub fn take_back(&self, bytes: u64) -> bool {
        let b = clamp(bytes) as i64;
        self.credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c >= b).then_some(c - b)
            })
            .is_ok()
    }

    /// Unused credit (0 when the cap is below what is held).
    pub fn credit(&self) -> u64 {
        self.credit.load(Ordering::Acquire).max(0) as u64
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn denials(&self) -> u64 {
        self.denials.load(Ordering::Relaxed)
    }

    /// Free space under the cap (the credit).
    pub fn available(&self) -> u64 {
        self.credit()
    }

    /// Reserves `bytes` if the credit covers them.
    pub fn try_reserve(&self, bytes: u64) -> Result<(), Denied> {
        let b = if bytes > i64::MAX as u64 {
            None
        } else {
            Some(bytes as i64)
        };
        let taken = b.and_then(|b| {
            self.credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    (c >= b).then_some(c - b)
                })
                .ok()
        });
        if taken.is_none() {
            self.denials.fetch_add(1, Ordering::Relaxed);
            return Err(Denied {
                limit: self.limit(),
                used: self.used(),
                requested: bytes,
            });
        }
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// Returns a reservation (after a failed allocation or a free). Never
    /// gives back more than is held, whatever the caller does.
    pub fn release(&self, bytes: u64) {
        let prev = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            })
            .unwrap_or(0);
        self.credit
            .fetch_add(clamp(bytes.min(prev)) as i64, Ordering::AcqRel);
    }

    /// Forgets everything (a forked child starts with no allocations).
    pub fn reset(&self) {
        let used = self.used.swap(0, Ordering::AcqRel);
        self.credit.fetch_add(clamp(used) as i64, Ordering::AcqRel);
        self.peak.store(0, Ordering::Relaxed);
        self.denials.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn charges_round_to_pages() {
        assert_eq!(charge_for(0), 0);
        assert_eq!(charge_for(1), 2 * MIB);
        assert_eq!(charge_for(2 * MIB), 2 * MIB);
        assert_eq!(charge_for(2 * MIB + 1), 4 * MIB);
        assert_eq!(
            charge_for(u64::MAX),
            u64::MAX,
            "saturates, and is then refused"
        );
    }

    #[test]
    fn array_sizes() {
        assert_eq!(array_bytes(1024, 0, 0, 4, 4), 16 * 1024);
        assert_eq!(array_bytes(64, 64, 64, 1, 2), 64 * 64 * 64 * 2);
        assert_eq!(array_bytes(u64::MAX, 2, 1, 1, 1), u64::MAX);
        // 8x8 -> 8x8 + 4x4 + 2x2 + 1x1
        assert_eq!(mipmapped_bytes(8, 8, 0, 4, 1, 1), 64 + 16 + 4 + 1);
        // 1D: height stays "absent"
        assert_eq!(mipmapped_bytes(8, 0, 0, 2, 1, 1), 8 + 4);
        assert_eq!(
            mipmapped_bytes(8, 8, 0, 0, 1, 1),
            64,
            "0 levels counts as 1"
        );
    }

    #[test]
    fn reserve_and_release() {
        let l = MemLedger::new(10 * MIB);
        assert_eq!(l.try_reserve(6 * MIB), Ok(()));
        assert_eq!(l.try_reserve(4 * MIB), Ok(()));
        assert_eq!(
            l.try_reserve(1),
            Err(Denied {
                limit: 10 * MIB,
                used: 10 * MIB,
                requested: 1
            })
        );
        assert_eq!(l.denials(), 1);
        l.release(6 * MIB);
        assert_eq!(l.available(), 6 * MIB);
        assert_eq!(l.peak(), 10 * MIB);
        l.release(100 * MIB);
        assert_eq!(l.used(), 0);
        assert!(l.try_reserve(u64::MAX).is_err(), "overflow is a denial");
        l.set_limit(MIB);
        assert!(l.try_reserve(2 * MIB).is_err());
        l.reset();
        assert_eq!((l.used(), l.peak(), l.denials()), (0, 0, 0));
    }

    #[test]
    fn a_lowered_cap_refuses_until_enough_is_released() {
        let l = MemLedger::new(10 * MIB);
        l.try_reserve(8 * MIB).unwrap();
        l.set_limit(4 * MIB);
        assert_eq!(l.available(), 0);
        assert!(l.try_reserve(2 * MIB).is_err());
        l.release(4 * MIB); // 4 held, cap 4
        assert!(l.try_reserve(2 * MIB).is_err());
        l.release(4 * MIB);
        assert_eq!(l.available(), 4 * MIB);
        l.set_limit(u64::MAX);
        assert!(l.try_reserve(1 << 50).is_ok(), "no cap");
    }

    #[test]
    fn grants_and_take_backs_move_the_credit_only() {
        let l = MemLedger::new(0);
        l.show_limit(GIB);
        assert_eq!(l.limit(), GIB);
        assert!(l.try_reserve(2 * MIB).is_err(), "nothing granted yet");
        l.grant(64 * MIB);
        l.try_reserve(2 * MIB).unwrap();
        assert_eq!(l.credit(), 62 * MIB);
        assert!(l.take_back(60 * MIB));
        assert!(!l.take_back(4 * MIB), "only 2 MiB left unused");
        l.release(2 * MIB);
        assert_eq!((l.used(), l.credit()), (0, 4 * MIB));
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_cap() {
        let cap = 64 * MIB;
        let l = Arc::new(MemLedger::new(cap));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut x = 0x9e3779b97f4a7c15u64 ^ t;
                    for _ in 0..5_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(3) && !held.is_empty() {
                            l.release(held.pop().unwrap());
                        } else {
                            let n = charge_for(x % (9 * MIB));
                            if l.try_reserve(n).is_ok() {
                                held.push(n);
                            }
                        }
                        assert!(l.used() <= cap);
                    }
                    for n in held {
                        l.release(n);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.used(), 0);
        assert!(l.peak() <= cap);
        assert!(l.denials() > 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Reserve(u64),
        Release(usize),
        SetLimit(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..64).prop_map(|m| Op::Reserve(m << 20)),
            any::<usize>().prop_map(Op::Release),
            (0u64..256).prop_map(|m| Op::SetLimit(m << 20)),
        ]
    }

    proptest! {
        /// Whatever the sequence of reservations, releases and cap changes,
        /// a reservation is admitted only if everything held stays within
        /// the cap in force, and the ledger's count is exactly what is held.
        #[test]
        fn held_memory_never_passes_the_cap_in_force(ops in prop::collection::vec(op(), 1..200)) {
            let l = MemLedger::new(128 << 20);
            let mut held: Vec<u64> = Vec::new();
            let mut limit = 128u64 << 20;
            for op in ops {
                match op {
                    Op::Reserve(b) => {
                        let fits = held.iter().sum::<u64>() + b <= limit;
                        prop_assert_eq!(l.try_reserve(b).is_ok(), fits);
                        if fits {
                            held.push(b);
                        }
                    }
                    Op::Release(i) if !held.is_empty() => l.release(held.swap_remove(i % held.len())),
                    Op::Release(_) => {}
                    Op::SetLimit(x) => {
                        l.set_limit(x);
                        limit = x;
                    }
                }
                prop_assert_eq!(l.used(), held.iter().sum::<u64>());
                prop_assert_eq!(l.available(), limit.saturating_sub(l.used()));
            }
        }
    }
}

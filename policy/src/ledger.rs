//! The per-device memory ledger of one process: a cap, what is reserved, the
//! high-water mark, and how many allocations were refused.
//!
//! Reservation happens *before* the driver allocates, with one atomic
//! compare-and-swap, and is rolled back if the driver fails. Two threads can
//! therefore never both pass the check and together exceed the cap (the race
//! that lets HAMi-core admit 600+600 MiB under a 1 GiB cap).

use std::sync::atomic::{AtomicU64, Ordering};

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
    limit: AtomicU64,
    used: AtomicU64,
    peak: AtomicU64,
    denials: AtomicU64,
}

impl Default for MemLedger {
    fn default() -> Self {
        MemLedger::new(u64::MAX)
    }
}

impl MemLedger {
    pub const fn new(limit: u64) -> MemLedger {
        MemLedger {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            denials: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the cap. Reservations already held stay; new ones are checked
    /// against the new cap.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
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

    /// Free space under the cap.
    pub fn available(&self) -> u64 {
        self.limit().saturating_sub(self.used())
    }

    /// Reserves `bytes` if the total stays within the cap.
    pub fn try_reserve(&self, bytes: u64) -> Result<(), Denied> {
        let limit = self.limit();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = match used.checked_add(bytes) {
                Some(n) if n <= limit => n,
                _ => {
                    self.denials.fetch_add(1, Ordering::Relaxed);
                    return Err(Denied {
                        limit,
                        used,
                        requested: bytes,
                    });
                }
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(actual) => used = actual,
            }
        }
    }

    /// Returns a reservation (after a failed allocation or a free). Never
    /// goes below zero, whatever the caller does.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Forgets everything (a forked child starts with no allocations).
    pub fn reset(&self) {
        self.used.store(0, Ordering::Release);
        self.peak.store(0, Ordering::Relaxed);
        self.denials.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

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

//! A token bucket measured in GPU time.
//!
//! Tokens are nanoseconds of device time. They refill at `rate` (a share of
//! one device: 30% refills 0.3 ns per ns) up to `burst`. Admission is
//! debt-style: a launch is admitted whenever the balance is not negative, and
//! its whole estimated cost is taken, so the balance may go below zero; the
//! next launch then waits until the debt is repaid. This lets a single kernel
//! longer than the burst run (it is paid for afterwards) while holding the
//! long-run rate exactly, and measured corrections ([`TokenBucket::charge`])
//! simply move the balance.

use crate::quota::Ppm;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Ppm,
    burst_ns: i64,
    tokens_ns: i64,
    /// Taken by [`TokenBucket::try_admit_stale`] since the last refill, and
    /// applied after it (so the refill is capped before the spending).
    deferred_ns: i64,
    /// Sub-nanosecond refill carried between refills (in ns * 1e6 units).
    carry: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: Ppm, burst_ns: u64, now_ns: u64) -> TokenBucket {
        let burst = burst_ns.min(i64::MAX as u64) as i64;
        TokenBucket {
            rate,
            burst_ns: burst,
            tokens_ns: burst,
            deferred_ns: 0,
            carry: 0,
            last_ns: now_ns,
        }
    }

    pub fn rate(&self) -> Ppm {
        self.rate
    }

    pub fn burst_ns(&self) -> u64 {
        self.burst_ns as u64
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        if dt > 0 && self.tokens_ns < self.burst_ns {
            // u64 arithmetic while it cannot overflow (gaps under ~5 hours).
            let (add, carry) = match dt
                .checked_mul(self.rate.0 as u64)
                .and_then(|x| x.checked_add(self.carry))
            {
                Some(total) => (total / 1_000_000, total % 1_000_000),
                None => {
                    let total = dt as u128 * self.rate.0 as u128 + self.carry as u128;
                    (
                        (total / 1_000_000).min(i64::MAX as u128) as u64,
                        (total % 1_000_000) as u64,
                    )
                }
            };
            self.carry = carry;
            self.tokens_ns = self
                .tokens_ns
                .saturating_add(add.min(i64::MAX as u64) as i64)
                .min(self.burst_ns);
        } else if dt > 0 {
            self.carry = 0;
        }
        self.tokens_ns = self.tokens_ns.saturating_sub(self.deferred_ns);
        self.deferred_ns = 0;
    }

    /// Admits a launch without reading the clock when the balance at the last
    /// refill, less what was taken since, already pays for it (time can only
    /// add tokens). Returns false when the caller must decide with the clock.
    pub fn try_admit_stale(&mut self, cost_ns: u64) -> bool {
        if self.tokens_ns.saturating_sub(self.deferred_ns) >= 0 {
            self.deferred_ns = self
                .deferred_ns
                .saturating_add(cost_ns.min(i64::MAX as u64) as i64);
            true
        } else {
            false
        }
    }

    /// The balance at `now` (negative: debt).
    pub fn balance(&mut self, now_ns: u64) -> i64 {
        self.refill(now_ns);
        self.tokens_ns
    }

    /// Admits a launch of estimated cost `cost_ns` if the balance is not
    /// negative, taking the cost. Otherwise returns how long to wait until it
    /// will be (nothing is taken).
    pub fn try_admit(&mut self, cost_ns: u64, now_ns: u64) -> Result<(), u64> {
        self.refill(now_ns);
        if self.tokens_ns >= 0 {
            self.tokens_ns = self
                .tokens_ns
                .saturating_sub(cost_ns.min(i64::MAX as u64) as i64);
            Ok(())
        } else {
            Err(self.wait_for_zero())
        }
    }

    /// Nanoseconds until a negative balance reaches zero at the current rate.
    fn wait_for_zero(&self) -> u64 {
        self.wait_for(0)
    }

    /// Nanoseconds until the balance reaches `level` (0 if it has), at the
    /// current rate; `level` above the burst is treated as the burst.
    fn wait_for(&self, level: i64) -> u64 {
        let level = level.min(self.burst_ns);
        if self.tokens_ns >= level {
            return 0;
        }
        let missing = (level as i128 - self.tokens_ns as i128) as u128;
        let rate = self.rate.0.max(1) as u128;
        // ceil(missing * 1e6 / rate), minus the carry already accumulated.
        let need = (missing * 1_000_000).saturating_sub(self.carry as u128);
        need.div_ceil(rate).min(u64::MAX as u128) as u64
    }

    /// Nanoseconds from `now` until the balance holds `level`.
    pub fn time_to_level(&mut self, level: u64, now_ns: u64) -> u64 {
        self.refill(now_ns);
        self.wait_for(level.min(i64::MAX as u64) as i64)
    }

    /// Moves the balance by a measured correction: positive `delta` means
    /// the work cost more than was taken, negative refunds.
    pub fn charge(&mut self, delta_ns: i64, now_ns: u64) {
        self.refill(now_ns);
        self.tokens_ns = self.tokens_ns.saturating_sub(delta_ns).min(self.burst_ns);
    }

    /// Forgives debt beyond `max_debt_ns` at `now`.
    pub fn limit_debt(&mut self, max_debt_ns: u64, now_ns: u64) {
        self.refill(now_ns);
        let floor = -(max_debt_ns.min(i64::MAX as u64) as i64);
        self.tokens_ns = self.tokens_ns.max(floor);
    }

    /// Changes the rate from `now` on (tokens earned so far are kept).
    pub fn set_rate(&mut self, rate: Ppm, now_ns: u64) {
        self.refill(now_ns);
        self.rate = rate;
        self.carry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    #[test]
    fn starts_full_and_refills_at_rate() {
        let mut b = TokenBucket::new(Ppm(300_000), 2 * MS, 0);
        assert_eq!(b.balance(0), 2 * MS as i64);
        assert_eq!(b.try_admit(3 * MS, 0), Ok(()));
        assert_eq!(b.balance(0), -(MS as i64));
        // 1 ms of debt at 30% needs 3.333.. ms
        let w = b.try_admit(1, 0).unwrap_err();
        assert_eq!(w, 3_333_334);
        assert!(b.try_admit(1, w - 1).is_err());
        assert_eq!(b.try_admit(1, w), Ok(()));
    }

    #[test]
    fn never_exceeds_burst() {
        let mut b = TokenBucket::new(Ppm::ONE, MS, 0);
        assert_eq!(b.balance(10_000 * MS), MS as i64);
        b.charge(-(5 * MS as i64), 10_000 * MS);
        assert_eq!(
            b.balance(10_000 * MS),
            MS as i64,
            "refunds are capped at the burst too"
        );
    }

    /// Over a long run, a saturating client gets exactly its rate, whatever
    /// the cost of each launch.
    #[test]
    fn long_run_rate_is_exact() {
        for (rate, cost) in [
            (300_000, 200 * US),
            (100_000, 10 * US),
            (700_000, 5 * MS),
            (250_000, 1),
        ] {
            let mut b = TokenBucket::new(Ppm(rate), 2 * MS, 0);
            let mut now = 0u64;
            let mut spent = 0u64;
            // long enough for ~100k launches, short enough to run fast
            let horizon = (cost * 100_000).clamp(10 * MS, 10_000 * MS);
            while now < horizon {
                match b.try_admit(cost, now) {
                    Ok(()) => spent += cost,
                    Err(w) => now += w,
                }
            }
            let expect = Ppm(rate).of(horizon) + 2 * MS;
            let err = (spent as i64 - expect as i64).unsigned_abs();
            assert!(
                err <= cost + 2,
                "rate {rate} cost {cost}: spent {spent} expected {expect}"
            );
        }
    }

    /// Admitting without the clock decides exactly as with it, and an idle
    /// period still refills at most one burst.
    #[test]
    fn stale_admission_is_exact() {
        let mut a = TokenBucket::new(Ppm(300_000), 2 * MS, 0);
        let mut b = a.clone();
        let mut now = 0;
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let cost = 10 * US + (x >> 40) % (500 * US);
            now += (x >> 20) % (300 * US);
            let fresh = a.try_admit(cost, now).is_ok();
            let stale = b.try_admit_stale(cost) || b.try_admit(cost, now).is_ok();
            assert_eq!(fresh, stale);
            assert_eq!(a.balance(now), b.balance(now));
        }
        // Idle for a second: one burst, not two.
        let mut c = TokenBucket::new(Ppm(500_000), 2 * MS, 0);
        c.try_admit(2 * MS, 0).unwrap();
        assert_eq!(c.balance(0), 0);
        let mut spent = 0;
        while c.try_admit_stale(100 * US) {
            spent += 100 * US;
        }
        assert_eq!(spent, 100 * US, "no clock: only what the balance paid");
        let _ = c.try_admit(100 * US, 1_000 * MS);
        assert_eq!(c.balance(1_000 * MS), 2 * MS as i64 - 200 * US as i64);
    }

    #[test]
    fn time_to_reach_a_level() {
        let mut b = TokenBucket::new(Ppm(500_000), 2 * MS, 0);
        assert_eq!(b.time_to_level(MS, 0), 0);
        b.try_admit(3 * MS, 0).unwrap();
        assert_eq!(b.time_to_level(MS, 0), 4 * MS, "from -1 ms to +1 ms at 50%");
        assert_eq!(b.time_to_level(10 * MS, 0), 6 * MS, "capped at the burst");
        assert_eq!(b.time_to_level(MS, 4 * MS), 0);
    }

    #[test]
    fn corrections_move_the_balance() {
        let mut b = TokenBucket::new(Ppm(500_000), MS, 0);
        b.try_admit(100 * US, 0).unwrap();
        b.charge(400 * US as i64, 0); // it really took 500 us
        assert_eq!(b.balance(0), (MS - 500 * US) as i64);
        b.charge(-(200 * US as i64), 0);
        assert_eq!(b.balance(0), (MS - 300 * US) as i64);
    }

    #[test]
    fn rate_changes_and_time_going_backwards() {
        let mut b = TokenBucket::new(Ppm(100_000), MS, 1_000 * MS);
        b.try_admit(2 * MS, 1_000 * MS).unwrap();
        assert_eq!(
            b.balance(500 * MS),
            -(MS as i64),
            "an earlier time refills nothing"
        );
        b.set_rate(Ppm::ONE, 1_000 * MS);
        assert_eq!(b.try_admit(1, 1_000 * MS).unwrap_err(), MS);
    }
}

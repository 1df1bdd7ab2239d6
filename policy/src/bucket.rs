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
    /// Sub-nanosecond refill carried between refills (in ns * 1e6 units).
    carry: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: Ppm, burst_ns: u64, now_ns: u64) -> TokenBucket {
        let burst = burst_ns.min(i64::MAX as u64) as i64;
        TokenBucket { rate, burst_ns: burst, tokens_ns: burst, carry: 0, last_ns: now_ns }
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
        if dt == 0 || self.tokens_ns >= self.burst_ns {
            self.carry = 0;
            return;
        }
        let total = dt as u128 * self.rate.0 as u128 + self.carry as u128;
        let add = (total / 1_000_000).min(i64::MAX as u128) as i64;
        self.carry = (total % 1_000_000) as u64;
        self.tokens_ns = self.tokens_ns.saturating_add(add).min(self.burst_ns);
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
            self.tokens_ns = self.tokens_ns.saturating_sub(cost_ns.min(i64::MAX as u64) as i64);
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
        assert_eq!(b.balance(10_000 * MS), MS as i64, "refunds are capped at the burst too");
    }

    /// Over a long run, a saturating client gets exactly its rate, whatever
    /// the cost of each launch.
    #[test]
    fn long_run_rate_is_exact() {
        for (rate, cost) in [(300_000, 200 * US), (100_000, 10 * US), (700_000, 5 * MS), (250_000, 1)] {
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
            assert!(err <= cost + 2, "rate {rate} cost {cost}: spent {spent} expected {expect}");
        }
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
        assert_eq!(b.balance(500 * MS), -(MS as i64), "an earlier time refills nothing");
        b.set_rate(Ppm::ONE, 1_000 * MS);
        assert_eq!(b.try_admit(1, 1_000 * MS).unwrap_err(), MS);
    }
}

//! Compute shares of one device among tenants: Kubernetes' requests and
//! limits applied to GPU time.
//!
//! Every tenant that has work (is *active*) gets its request, never more
//! than its limit; what is left is shared among the active tenants by weight
//! (water-filling: a tenant that reaches its limit stops taking, the rest is
//! shared among the others), so the device is never left idle while someone
//! who may use it wants it (work-conserving). A tenant without work gets
//! nothing and holds nothing back. When the active tenants' requests alone
//! exceed the device (an overcommitted configuration), the requests are
//! scaled down in proportion; otherwise every request is met.
//!
//! No tenant with work starves: each gets at least its floor, as if it had
//! requested that much: [`FLOOR_PPM`] (1%), never above its limit, and the
//! floors of all tenants together never more than [`FLOOR_TOTAL_PPM`] (5%:
//! among more than five tenants with work, an equal part of that). So
//! requests that sum to at most 95% of the device are always met, however
//! many tenants without a request have work (a tenant that multiplies
//! itself cannot crowd out another's guarantee).
//!
//! Shares are parts per million of the device. The computation is pure and
//! O(n log n) in the number of tenants.

use crate::quota::Ppm;

/// The least share of a tenant with work.
pub const FLOOR_PPM: u64 = 10_000;
/// The most that the floors of all tenants take together.
pub const FLOOR_TOTAL_PPM: u64 = 50_000;

/// The floor of a tenant with limit `limit` among `n` with work on a device
/// of `capacity` ppm.
pub fn floor_of(limit: u64, capacity: u64, n: u64) -> u64 {
    FLOOR_PPM
        .min(limit)
        .min(FLOOR_TOTAL_PPM.min(capacity) / n.max(1))
}

/// What the policy knows of one tenant on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Guaranteed share while active.
    pub request: Ppm,
    /// Most it may get (100%: work-conserving without a ceiling).
    pub limit: Ppm,
    /// Relative claim on spare time (at least 1).
    pub weight: u32,
    /// Whether it has work on the device now.
    pub active: bool,
}

/// The shares (ppm) of `claims`, in the same order.
pub fn shares(claims: &[Claim]) -> Vec<u32> {
    shares_of(claims, Ppm::ONE.0)
}

/// As [`shares`], for a device of `capacity` ppm (less than 100% when part
/// of it is set aside).
pub fn shares_of(claims: &[Claim], capacity: u32) -> Vec<u32> {
    let cap = capacity as u64;
    let limit = |c: &Claim| (c.limit.0 as u64).min(cap);
    let active: Vec<usize> = (0..claims.len())
        .filter(|&i| claims[i].active && limit(&claims[i]) > 0)
        .collect();
    let n = active.len() as u64;
    let floor = |i: usize| floor_of(limit(&claims[i]), cap, n);
    // Tenants that would get less than their floor get the floor; the
    // others share the rest (floors sum to at most the device, and every
    // round pins at least one more tenant or ends).
    let mut pinned = vec![false; claims.len()];
    loop {
        let rest: Vec<usize> = active.iter().copied().filter(|&i| !pinned[i]).collect();
        let left = cap
            - (0..claims.len())
                .filter(|&i| pinned[i])
                .map(floor)
                .sum::<u64>();
        let mut out = fill(claims, &rest, left);
        let mut more = false;
        for &i in &rest {
            if out[i] < floor(i) {
                pinned[i] = true;
                more = true;
            }
        }
        if !more {
            for i in (0..claims.len()).filter(|&i| pinned[i]) {
                out[i] = floor(i);
            }
            return out.into_iter().map(|x| x as u32).collect();
        }
    }
}

/// Requests, then spare time by weight, among the tenants `active` (with
/// work and a limit above 0) on a device of `cap` ppm.
fn fill(claims: &[Claim], active: &[usize], cap: u64) -> Vec<u64> {
    let limit = |c: &Claim| (c.limit.0 as u64).min(cap);
    let mut out = vec![0u64; claims.len()];
    if active.is_empty() {
        return out;
    }
    // Requests, capped by limits, scaled down together if they overcommit.
    let want: Vec<u64> = active
        .iter()
        .map(|&i| (claims[i].request.0 as u64).min(limit(&claims[i])))
        .collect();
    let total: u64 = want.iter().sum();
    for (k, &i) in active.iter().enumerate() {
        out[i] = if total > cap {
            want[k] * cap / total
        } else {
            want[k]
        };
    }
    // Spare time by weight, water-filling under the limits.
    let mut spare = cap.saturating_sub(active.iter().map(|&i| out[i]).sum());
    let mut open: Vec<usize> = active
        .iter()
        .copied()
        .filter(|&i| out[i] < limit(&claims[i]))
        .collect();
    while spare > 0 && !open.is_empty() {
        let weights: u64 = open.iter().map(|&i| claims[i].weight.max(1) as u64).sum();
        // The tenant that reaches its limit first at this rate bounds the round.
        let per_weight_to_fill = open
            .iter()
            .map(|&i| (limit(&claims[i]) - out[i]).div_ceil(claims[i].weight.max(1) as u64))
            .min()
            .unwrap_or(0);
        let per_weight = (spare / weights).min(per_weight_to_fill);
        if per_weight == 0 {
            // Less than one ppm per unit of weight is left: share it in
            // proportion to weight, rounding down, then hand the last few
            // ppm out one at a time, heaviest first, so nothing is lost.
            for &i in &open {
                let g = (spare * claims[i].weight.max(1) as u64 / weights)
                    .min(limit(&claims[i]) - out[i]);
                out[i] += g;
            }
            spare = cap.saturating_sub(active.iter().map(|&i| out[i]).sum());
            let mut by_weight = open.clone();
            by_weight.sort_by_key(|&i| std::cmp::Reverse(claims[i].weight));
            while spare > 0 {
                let before = spare;
                for &i in &by_weight {
                    if spare > 0 && out[i] < limit(&claims[i]) {
                        out[i] += 1;
                        spare -= 1;
                    }
                }
                if spare == before {
                    break;
                }
            }
            break;
        }
        for &i in &open {
            let give =
                (per_weight * claims[i].weight.max(1) as u64).min(limit(&claims[i]) - out[i]);
            out[i] += give;
            spare -= give;
        }
        open.retain(|&i| out[i] < limit(&claims[i]));
    }
    out
}

/// Splits a tenant's share among its processes on the device: equally
/// among those with work (their siblings without work leave them their
/// part), all of it to one if none has work yet (so the first launch is not
/// held back).
pub fn split(tenant_share: u32, active: &[bool]) -> Vec<u32> {
    let n = active.iter().filter(|a| **a).count() as u32;
    if n == 0 {
        return active.iter().map(|_| tenant_share).collect();
    }
    active
        .iter()
        .map(|&a| if a { tenant_share / n } else { 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(request: u32, limit: u32, weight: u32, active: bool) -> Claim {
        Claim {
            request: Ppm(request * 10_000),
            limit: Ppm(limit * 10_000),
            weight,
            active,
        }
    }

    fn pct(v: &[u32]) -> Vec<f64> {
        v.iter().map(|x| *x as f64 / 10_000.0).collect()
    }

    #[test]
    fn equal_weights_share_equally() {
        assert_eq!(
            pct(&shares(&[c(0, 100, 1, true), c(0, 100, 1, true)])),
            vec![50.0, 50.0]
        );
    }

    #[test]
    fn weights_share_the_spare_time() {
        assert_eq!(
            pct(&shares(&[c(0, 100, 1, true), c(0, 100, 3, true)])),
            vec![25.0, 75.0]
        );
    }

    #[test]
    fn requests_are_guaranteed_and_limits_are_ceilings() {
        let s = pct(&shares(&[
            c(30, 100, 1, true),
            c(0, 100, 1, true),
            c(0, 20, 5, true),
        ]));
        assert_eq!(s, vec![55.0, 25.0, 20.0]);
        // 30% requested, 60% limit, alone: gets its limit.
        assert_eq!(pct(&shares(&[c(30, 60, 1, true)])), vec![60.0]);
    }

    #[test]
    fn an_idle_tenant_leaves_its_share_to_others() {
        let s = pct(&shares(&[c(70, 100, 1, false), c(10, 100, 1, true)]));
        assert_eq!(s, vec![0.0, 100.0]);
        assert_eq!(shares(&[c(70, 100, 1, false)]), vec![0]);
        assert!(shares(&[]).is_empty());
    }

    #[test]
    fn overcommitted_requests_are_scaled_down_together() {
        let s = pct(&shares(&[c(80, 100, 1, true), c(40, 100, 1, true)]));
        assert!(
            (s[0] - 66.6666).abs() < 0.01 && (s[1] - 33.3333).abs() < 0.01,
            "{s:?}"
        );
        assert!(s.iter().sum::<f64>() <= 100.0);
    }

    #[test]
    fn no_tenant_with_work_starves() {
        // The requests take the whole device; the third still gets its floor.
        let s = shares(&[c(60, 100, 1, true), c(40, 100, 1, true), c(0, 100, 1, true)]);
        assert_eq!(s[2], FLOOR_PPM as u32);
        assert_eq!(s.iter().sum::<u32>(), 1_000_000);
        // A very small weight is not rounded away.
        let s = shares(&[c(0, 100, 1000, true), c(0, 100, 1, true)]);
        assert!(s[1] >= FLOOR_PPM as u32, "{s:?}");
        // Among 200 tenants with work, an equal part each.
        let many = vec![c(0, 100, 1, true); 200];
        assert!(shares(&many).iter().all(|x| *x == 5_000));
    }

    #[test]
    fn many_tenants_without_requests_cannot_crowd_out_a_request() {
        let mut claims = vec![c(90, 100, 1, true)];
        claims.extend(vec![c(0, 100, 1, true); 99]);
        let s = shares(&claims);
        assert!(s[0] >= 900_000, "the request is met: {}", s[0]);
        // The 99 share the rest, each above 0.
        assert!(
            s[1..].iter().all(|x| *x > 0 && *x <= 1_100),
            "{:?}",
            &s[1..4]
        );
        assert!(s.iter().sum::<u32>() <= 1_000_000);
    }

    #[test]
    fn splitting_among_processes() {
        assert_eq!(
            split(500_000, &[true, true, false, true]),
            vec![166_666, 166_666, 0, 166_666]
        );
        assert_eq!(split(500_000, &[false, false]), vec![500_000, 500_000]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn claim() -> impl Strategy<Value = Claim> {
        (
            0u32..=1_000_000,
            0u32..=1_000_000,
            1u32..=1000,
            any::<bool>(),
        )
            .prop_map(|(a, b, weight, active)| {
                let (request, limit) = (a.min(b), a.max(b));
                Claim {
                    request: Ppm(request),
                    limit: Ppm(limit),
                    weight,
                    active,
                }
            })
    }

    /// Each claim's request as the policy takes it (at least its floor;
    /// 0 when idle).
    fn effective(claims: &[Claim]) -> Vec<u64> {
        let n = claims.iter().filter(|c| c.active && c.limit.0 > 0).count() as u64;
        claims
            .iter()
            .map(|c| {
                if c.active && c.limit.0 > 0 {
                    (c.request.0 as u64).max(floor_of(c.limit.0 as u64, 1_000_000, n))
                } else {
                    0
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn never_more_than_the_device_nor_any_limit(claims in prop::collection::vec(claim(), 0..12)) {
            let s = shares(&claims);
            prop_assert_eq!(s.len(), claims.len());
            prop_assert!(s.iter().map(|x| *x as u64).sum::<u64>() <= 1_000_000);
            for (c, x) in claims.iter().zip(&s) {
                prop_assert!(*x <= c.limit.0, "{} above its limit {}", x, c.limit.0);
                if !c.active {
                    prop_assert_eq!(*x, 0);
                }
            }
        }

        #[test]
        fn feasible_requests_are_met(claims in prop::collection::vec(claim(), 0..12)) {
            let s = shares(&claims);
            let requested: u64 = effective(&claims).iter().sum();
            if requested <= 1_000_000 {
                for (c, x) in claims.iter().zip(&s) {
                    if c.active {
                        prop_assert!(*x >= c.request.0, "{} below its request {}", x, c.request.0);
                    }
                }
            }
        }

        #[test]
        fn requests_up_to_95_percent_are_met_among_any_number_of_tenants(
            requests in prop::collection::vec(0u32..=950_000, 1..4),
            others in 0usize..300,
        ) {
            let total: u64 = requests.iter().map(|r| *r as u64).sum();
            prop_assume!(total <= 1_000_000 - FLOOR_TOTAL_PPM);
            let mut claims: Vec<Claim> = requests
                .iter()
                .map(|r| Claim { request: Ppm(*r), limit: Ppm::ONE, weight: 1, active: true })
                .collect();
            claims.extend(std::iter::repeat_n(
                Claim { request: Ppm(0), limit: Ppm::ONE, weight: 1000, active: true },
                others,
            ));
            let s = shares(&claims);
            for (r, x) in requests.iter().zip(&s) {
                prop_assert!(*x >= *r, "{} below its request {}", x, r);
            }
            prop_assert!(s.iter().all(|x| *x > 0));
        }

        #[test]
        fn work_conserving(claims in prop::collection::vec(claim(), 1..12)) {
            let s = shares(&claims);
            let total: u64 = s.iter().map(|x| *x as u64).sum();
            let someone_below_limit = claims.iter().zip(&s).any(|(c, x)| c.active && *x < c.limit.0);
            if someone_below_limit {
                prop_assert_eq!(total, 1_000_000, "{:?} -> {:?}", claims, s);
            }
        }

        #[test]
        fn every_tenant_with_work_gets_its_floor(claims in prop::collection::vec(claim(), 0..12)) {
            let s = shares(&claims);
            let n = claims.iter().filter(|c| c.active && c.limit.0 > 0).count() as u64;
            for (c, x) in claims.iter().zip(&s) {
                if c.active && c.limit.0 > 0 {
                    let f = floor_of(c.limit.0 as u64, 1_000_000, n);
                    prop_assert!(*x as u64 >= f, "{} below its floor {}", x, f);
                }
            }
        }

        #[test]
        fn spare_time_follows_weights(claims in prop::collection::vec(claim(), 2..8)) {
            let s = shares(&claims);
            let eff = effective(&claims);
            let requested: u64 = eff.iter().sum();
            prop_assume!(requested <= 1_000_000);
            // Two active tenants strictly between request and limit took the
            // spare time in proportion to their weights (to a ppm per weight).
            // (Above its floor too: one at its floor is pinned there.)
            let open: Vec<(u64, u64)> = claims.iter().zip(&s).zip(&eff)
                .filter(|((c, x), r)| c.active && **x as u64 > **r && **x < c.limit.0)
                .map(|((c, x), _)| ((*x - c.request.0) as u64, c.weight as u64))
                .collect();
            for a in &open {
                for b in &open {
                    let (ea, wa) = *a;
                    let (eb, wb) = *b;
                    // ea / wa ~ eb / wb
                    let diff = (ea * wb).abs_diff(eb * wa);
                    prop_assert!(diff <= (wa + wb) * wa.max(wb) * 2, "{:?} vs {:?}", a, b);
                }
            }
        }

        #[test]
        fn splits_never_exceed_the_tenant(share in 0u32..=1_000_000, active in prop::collection::vec(any::<bool>(), 1..16)) {
            let parts = split(share, &active);
            let n = active.iter().filter(|a| **a).count();
            if n > 0 {
                prop_assert!(parts.iter().map(|x| *x as u64).sum::<u64>() <= share as u64);
            }
        }
    }
}

//! The node's status as JSON (what `tslice status --json` prints and
//! `tslice top` shows): tenants, their processes and devices, memory used /
//! limit / high-water mark, share target and achieved, throttle wait.

use crate::state::{uuid_string, State};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub fn status(s: &State, uptime_s: f64) -> Value {
    let mut devices = std::collections::BTreeMap::new();
    for p in s.procs.values() {
        for d in &p.devs {
            devices.insert(uuid_string(&d.uuid), d.total);
        }
    }
    let tenants: Vec<Value> = s
        .tenants
        .values()
        .map(|t| {
            let procs: Vec<_> = t.procs.iter().filter_map(|id| s.procs.get(id)).collect();
            let devs: Vec<Value> = t
                .ledgers
                .iter()
                .map(|(uuid, l)| {
                    let mut used = 0u64;
                    let mut achieved = 0u64;
                    let mut wait_ns = 0u64;
                    let mut throttled = 0u64;
                    for p in &procs {
                        let Some(i) = p.devs.iter().position(|d| d.uuid == *uuid) else { continue };
                        achieved += p.devs[i].achieved_ppm as u64;
                        if let Some(v) = &p.view {
                            let pd = &v.page().dev[i];
                            used += pd.mem_used.load(Ordering::Relaxed);
                            wait_ns += pd.throttle_wait_ns.load(Ordering::Relaxed);
                            throttled += pd.throttled.load(Ordering::Relaxed);
                        }
                    }
                    json!({
                        "uuid": uuid_string(uuid),
                        "memory_used": used,
                        "memory_limit": (l.limit != u64::MAX).then_some(l.limit),
                        "memory_reserved": l.reserved,
                        "memory_high_water": l.high_water,
                        "memory_denials": l.denials,
                        "share_target": t.shares.get(uuid).map(|x| *x as f64 / 1e6),
                        "share_achieved": achieved as f64 / 1e6,
                        "throttle_wait_s": wait_ns as f64 / 1e9,
                        "throttled_launches": throttled,
                    })
                })
                .collect();
            let processes: Vec<Value> = procs
                .iter()
                .map(|p| {
                    json!({
                        "pid": p.peer.pid,
                        "uid": p.peer.uid,
                        "gid": p.peer.gid,
                        "cgroup": p.peer.cgroup,
                        "devices": p.devs.iter().enumerate().map(|(i, d)| {
                            let (used, launches) = p.view.as_ref().map_or((0, 0), |v| {
                                let pd = &v.page().dev[i];
                                (pd.mem_used.load(Ordering::Relaxed), pd.launches.load(Ordering::Relaxed))
                            });
                            json!({
                                "ordinal": i,
                                "uuid": uuid_string(&d.uuid),
                                "memory_granted": d.granted,
                                "memory_used": used,
                                "share": d.share_ppm as f64 / 1e6,
                                "launches": launches,
                            })
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "name": t.name,
                "configured": t.configured,
                "class": t.limits.class.as_str(),
                "weight": t.limits.weight,
                "compute_request": t.limits.compute_request.0 as f64 / 1e6,
                "compute_limit": t.limits.compute_limit.0 as f64 / 1e6,
                "devices": devs,
                "processes": processes,
            })
        })
        .collect();
    json!({
        "uptime_s": uptime_s,
        "devices": devices.into_iter().map(|(u, total)| json!({"uuid": u, "memory_total": total})).collect::<Vec<_>>(),
        "tenants": tenants,
    })
}

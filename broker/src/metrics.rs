//! Prometheus metrics (OpenMetrics text at `/metrics`, by `prometheus-client`):
//! per tenant and device, memory used / limit / reserved / high-water mark,
//! allocation denials, compute share target and achieved, throttle wait
//! (a histogram of the time launches waited per tick), connected processes;
//! and the broker's own health.

use crate::state::{uuid_string, State};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DevLabels {
    pub tenant: String,
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

fn wait_histogram() -> Histogram {
    // 10 us .. ~2.6 s of waiting per 10 ms tick (a tick cannot hold more
    // than its threads x 10 ms, but many threads may wait at once).
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

pub struct Metrics {
    registry: Registry,
    mem_used: Family<DevLabels, GaugeF>,
    mem_limit: Family<DevLabels, GaugeF>,
    mem_reserved: Family<DevLabels, GaugeF>,
    mem_high_water: Family<DevLabels, GaugeF>,
    denials: Family<DevLabels, Counter>,
    share_target: Family<DevLabels, GaugeF>,
    share_achieved: Family<DevLabels, GaugeF>,
    throttle_wait: Family<TenantLabels, Histogram, fn() -> Histogram>,
    processes: Family<TenantLabels, Gauge>,
    pub up: Gauge,
    pub connections: Counter,
    pub views: Counter,
    pub rejected: Family<ResultLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    /// Denials already counted, per label set.
    denials_seen: Mutex<HashMap<DevLabels, u64>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            mem_used: Family::default(),
            mem_limit: Family::default(),
            mem_reserved: Family::default(),
            mem_high_water: Family::default(),
            denials: Family::default(),
            share_target: Family::default(),
            share_achieved: Family::default(),
            throttle_wait: Family::new_with_constructor(wait_histogram),
            processes: Family::default(),
            up: Gauge::default(),
            connections: Counter::default(),
            views: Counter::default(),
            rejected: Family::default(),
            reloads: Family::default(),
            denials_seen: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "tslice_tenant_memory_used_bytes",
            "Device memory the tenant's processes use",
            m.mem_used.clone(),
        );
        registry.register(
            "tslice_tenant_memory_limit_bytes",
            "The tenant's memory limit on the device",
            m.mem_limit.clone(),
        );
        registry.register(
            "tslice_tenant_memory_reserved_bytes",
            "Memory granted to the tenant's processes (used or held for their next allocations)",
            m.mem_reserved.clone(),
        );
        registry.register(
            "tslice_tenant_memory_high_water_bytes",
            "Most memory the tenant has reserved",
            m.mem_high_water.clone(),
        );
        registry.register(
            "tslice_tenant_memory_denials",
            "Allocations refused at the tenant's limit",
            m.denials.clone(),
        );
        registry.register(
            "tslice_tenant_compute_share_target_ratio",
            "The tenant's share of the device's time",
            m.share_target.clone(),
        );
        registry.register(
            "tslice_tenant_compute_share_achieved_ratio",
            "GPU time charged to the tenant per second of the last tick (gated processes only)",
            m.share_achieved.clone(),
        );
        registry.register(
            "tslice_tenant_throttle_wait_seconds",
            "Time the tenant's launches waited, per tick",
            m.throttle_wait.clone(),
        );
        registry.register(
            "tslice_tenant_processes",
            "Connected processes of the tenant",
            m.processes.clone(),
        );
        registry.register(
            "tslice_broker_up",
            "1 while the broker serves",
            m.up.clone(),
        );
        registry.register(
            "tslice_broker_connections",
            "Processes that connected",
            m.connections.clone(),
        );
        registry.register(
            "tslice_broker_views",
            "Device views answered (NVML in processes without CUDA)",
            m.views.clone(),
        );
        registry.register(
            "tslice_broker_rejected",
            "Connections closed for a bad message or identity",
            m.rejected.clone(),
        );
        registry.register(
            "tslice_broker_config_reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Throttle waits of the last tick, into the histogram.
    pub fn observe_tick(&self, s: &State) {
        let mut per_tenant: HashMap<&str, f64> = HashMap::new();
        for p in s.procs.values() {
            let w: f64 = p.devs.iter().map(|d| d.wait_delta_s).sum();
            *per_tenant.entry(&p.tenant).or_default() += w;
        }
        for (t, w) in per_tenant {
            if w > 0.0 {
                self.throttle_wait
                    .get_or_create(&TenantLabels {
                        tenant: t.to_string(),
                    })
                    .observe(w);
            }
        }
    }

    /// Everything else, from the state, just before an export.
    pub fn refresh(&self, s: &State) {
        for g in [
            &self.mem_used,
            &self.mem_limit,
            &self.mem_reserved,
            &self.mem_high_water,
            &self.share_target,
            &self.share_achieved,
        ] {
            g.clear();
        }
        self.processes.clear();
        let mut seen = self.denials_seen.lock().unwrap_or_else(|p| p.into_inner());
        for t in s.tenants.values() {
            self.processes
                .get_or_create(&TenantLabels {
                    tenant: t.name.clone(),
                })
                .set(t.procs.len() as i64);
            for (uuid, l) in &t.ledgers {
                let labels = DevLabels {
                    tenant: t.name.clone(),
                    device: uuid_string(uuid),
                };
                let used: u64 = t
                    .procs
                    .iter()
                    .filter_map(|id| s.procs.get(id))
                    .filter_map(|p| {
                        let i = p.devs.iter().position(|d| d.uuid == *uuid)?;
                        Some(
                            p.view.as_ref()?.page().dev[i]
                                .mem_used
                                .load(Ordering::Relaxed),
                        )
                    })
                    .sum();
                self.mem_used.get_or_create(&labels).set(used as f64);
                if l.limit != u64::MAX {
                    self.mem_limit.get_or_create(&labels).set(l.limit as f64);
                }
                self.mem_reserved
                    .get_or_create(&labels)
                    .set(l.reserved as f64);
                self.mem_high_water
                    .get_or_create(&labels)
                    .set(l.high_water as f64);
                let before = seen.insert(labels.clone(), l.denials).unwrap_or(0);
                self.denials
                    .get_or_create(&labels)
                    .inc_by(l.denials.saturating_sub(before));
                if let Some(share) = t.shares.get(uuid) {
                    self.share_target
                        .get_or_create(&labels)
                        .set(*share as f64 / 1e6);
                }
                let achieved: u64 = t
                    .procs
                    .iter()
                    .filter_map(|id| s.procs.get(id))
                    .filter_map(|p| p.devs.iter().find(|d| d.uuid == *uuid))
                    .map(|d| d.achieved_ppm as u64)
                    .sum();
                self.share_achieved
                    .get_or_create(&labels)
                    .set(achieved as f64 / 1e6);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

//! The broker's model of the node: tenants, their processes, one memory
//! ledger per tenant and physical device, and the compute shares it hands
//! out. Plain data behind one mutex in the server; every operation is short
//! and never waits.
//!
//! Memory: a process reserves from its tenant's ledger in chunks (so most
//! of its allocations need no round trip) and returns unused reservation
//! when it frees or when the broker asks (a `Reclaim`, sent when a sibling
//! needs what it holds unused). The ledger never grants beyond the limit;
//! a process that exits (or is killed) has everything it held returned.
//!
//! Compute: every tick the broker sees which processes launched since the
//! last (their process pages count launches), computes each tenant's share
//! of each device (`policy::fairshare`), splits it among the tenant's active
//! processes and writes it into their budget pages.

use crate::config::{Class, Limits, PolicySource};
use crate::identity::Peer;
use crate::pages::{Budget, ProcessView};
use cuda_abi::CUuuid;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use tslice_policy::fairshare::{self, Claim};
use tslice_policy::ledger::GRANULARITY;
use tslice_proto::{Hello, View, HELLO_RECONNECT};

pub type ConnId = u64;
pub type Uuid = [u8; 16];

/// Most a process reserves beyond what it asked for.
pub const CHUNK: u64 = 64 << 20;
/// A process counts as having work on a device for this long after it was
/// last seen launching.
pub const ACTIVE_NS: u64 = 60_000_000;
/// Time-slicing costs a context switch (about 90 us on current GPUs, 8% of
/// a timeslice) whenever the device passes from one process to another.
/// Handing out the whole device to several processes makes that cost come
/// out of whoever happens to be preempted; the broker hands out this much
/// less instead (ppm), so the switches have room and shares land on target.
pub const SWITCH_MARGIN_PPM: u32 = 80_000;
/// Coordinated turns: every process with work gets a slot of the device in
/// a recurring cycle (the others hold their launches meanwhile), so the
/// device changes hands once per slot instead of once per timeslice. A
/// cycle gives each process at least this much on average...
pub const SLOT_PER_PROCESS_NS: u64 = 5_000_000;
/// ...and is at least this long.
pub const SLOT_MIN_CYCLE_NS: u64 = 10_000_000;
/// A process may queue work this long before its slot starts, so that its
/// first kernel is ready when the previous process's last one ends (the
/// device then switches once, about 90 us, at the slot's start).
pub const SLOT_LEAD_NS: u64 = 100_000;
/// What a process gets instead of the whole device
/// ([`tslice_policy::gate::SHORT_OF_WHOLE`]: paced, a short queue): until
/// the first tick has shared the device out, while it has no work (so that
/// processes waking together do not each queue 20 ms before the next
/// tick), and, while a latency-critical tenant has processes on the device
/// (even idle ones), every process of another tenant: when the
/// latency-critical tenant wakes, the others hold within a tick and what
/// they queued drains within about 2 ms.
pub const SHORT_OF_WHOLE_PPM: u32 = tslice_policy::gate::SHORT_OF_WHOLE.0;
/// How long best-effort tenants hold their launches after a
/// latency-critical tenant was last seen with work (renewed every tick).
pub const HOLD_NS: u64 = 25_000_000;

pub fn uuid_string(u: &Uuid) -> String {
    CUuuid { bytes: *u }.to_gpu_string()
}

/// One tenant's memory on one physical device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevLedger {
    pub limit: u64,
    /// The device's memory, as the tenant's live processes report it: the
    /// smallest report (a process can only lower it, for its own tenant, and
    /// only while it lives); 0 while none of them is on the device.
    /// Share-of-device limits resolve against it.
    pub total: u64,
    /// The device's CUDA ordinal as the tenant first saw it (per-ordinal
    /// limits apply by it; another process may see the device elsewhere).
    pub ordinal: u32,
    /// Granted to its processes (used or held for use).
    pub reserved: u64,
    pub high_water: u64,
    pub denials: u64,
}

#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub limits: Limits,
    /// Declared in the configuration (kept without processes).
    pub configured: bool,
    pub ledgers: BTreeMap<Uuid, DevLedger>,
    pub procs: BTreeSet<ConnId>,
    /// The share of each device it was given at the last tick (ppm).
    pub shares: BTreeMap<Uuid, u32>,
}

/// One device of a process.
#[derive(Clone, Debug)]
pub struct ProcDev {
    pub uuid: Uuid,
    pub total: u64,
    pub granted: u64,
    launches_seen: u64,
    active_until_ns: u64,
    pub share_ppm: u32,
    charged_seen: u64,
    pub achieved_ppm: u32,
    wait_seen: u64,
    /// Throttle wait since the last tick (seconds), for the histogram.
    pub wait_delta_s: f64,
}

pub struct Proc {
    pub id: ConnId,
    pub peer: Peer,
    pub tenant: String,
    pub devs: Vec<ProcDev>,
    pub budget: Budget,
    pub view: Option<ProcessView>,
    pub since_ns: u64,
}

impl Proc {
    fn active(&self, i: usize, now: u64) -> bool {
        self.devs.get(i).is_some_and(|d| d.active_until_ns > now)
    }
}

/// What a reservation got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    Granted(u64),
    /// Not now: these siblings (and their ordinal of the device) hold
    /// reservation unused, and are to be asked to return it.
    Reclaim(Vec<(ConnId, u32)>),
    Denied,
}

pub struct State {
    /// Who is which tenant, with what limits.
    pub source: Box<dyn PolicySource>,
    pub tenants: BTreeMap<String, Tenant>,
    pub procs: BTreeMap<ConnId, Proc>,
    next_id: ConnId,
    last_tick_ns: u64,
    /// Each device's slot cycle anchor (fixed, so slots do not drift).
    anchors: BTreeMap<Uuid, u64>,
}

fn tenant_for_spec(name: &str, limits: &Limits, configured: bool) -> Tenant {
    Tenant {
        name: name.to_string(),
        limits: limits.clone(),
        configured,
        ledgers: BTreeMap::new(),
        procs: BTreeSet::new(),
        shares: BTreeMap::new(),
    }
}

/// A tenant's limit on a device, from its limits and the device as its
/// ledger knows it.
fn resolve_limit(limits: &Limits, uuid: &Uuid, l: &DevLedger) -> u64 {
    let own = limits
        .memory
        .as_ref()
        .and_then(|m| m.for_device(l.ordinal, Some(&uuid_string(uuid))))
        .map_or(u64::MAX, |m| m.resolve(l.total));
    own.min(
        limits
            .memory_ceiling
            .map_or(u64::MAX, |c| c.resolve(l.total)),
    )
}

/// A tenant's ledger of a device a process reports (created at the first
/// report; a smaller total than known lowers the ledger's).
fn ledger_for(t: &mut Tenant, uuid: Uuid, ordinal: u32, total: u64) -> &mut DevLedger {
    let limits = &t.limits;
    let l = t.ledgers.entry(uuid).or_insert_with(|| DevLedger {
        ordinal,
        ..DevLedger::default()
    });
    if l.total == 0 || total < l.total {
        l.total = total;
        l.limit = resolve_limit(limits, &uuid, l);
    }
    l
}

impl State {
    pub fn new(source: Box<dyn PolicySource>) -> State {
        let mut s = State {
            source,
            tenants: BTreeMap::new(),
            procs: BTreeMap::new(),
            next_id: 1,
            last_tick_ns: 0,
            anchors: BTreeMap::new(),
        };
        s.declare_tenants();
        s
    }

    /// Every configured tenant exists, with its limits (also after a reload).
    fn declare_tenants(&mut self) {
        for (name, limits) in self.source.declared() {
            let t = self
                .tenants
                .entry(name.clone())
                .or_insert_with(|| tenant_for_spec(&name, &limits, true));
            t.limits = limits;
            t.configured = true;
        }
    }

    /// Registers a connected process; returns its id and tenant.
    pub fn admit(
        &mut self,
        peer: Peer,
        hello: &Hello,
        budget: Budget,
        view: Option<ProcessView>,
        now: u64,
    ) -> (ConnId, String) {
        let id = self.next_id;
        self.next_id += 1;
        let (name, limits) = self.source.classify(&peer);
        let reconnect = hello.flags & HELLO_RECONNECT != 0;
        let devs: Vec<ProcDev> = hello
            .devices
            .iter()
            .map(|d| ProcDev {
                uuid: d.uuid,
                total: d.total,
                // A process reconnecting after a broker restart keeps what it
                // holds: the ledger is rebuilt from these reports.
                granted: if reconnect { d.granted.max(d.used) } else { 0 },
                launches_seen: 0,
                active_until_ns: 0,
                share_ppm: SHORT_OF_WHOLE_PPM,
                charged_seen: 0,
                achieved_ppm: 0,
                wait_seen: 0,
                wait_delta_s: 0.0,
            })
            .collect();
        let t = self
            .tenants
            .entry(name.clone())
            .or_insert_with(|| tenant_for_spec(&name, &limits, false));
        t.procs.insert(id);
        let mut devs = devs;
        for (i, d) in devs.iter_mut().enumerate() {
            let l = ledger_for(t, d.uuid, i as u32, d.total);
            // What a reconnecting process says it holds is believed up to
            // the device's size as it reports it (a lie can only crowd its
            // own tenant).
            d.granted = d.granted.min(d.total);
            l.reserved = l.reserved.saturating_add(d.granted);
            l.high_water = l.high_water.max(l.reserved);
        }
        self.procs.insert(
            id,
            Proc {
                id,
                peer,
                tenant: name.clone(),
                devs,
                budget,
                view,
                since_ns: now,
            },
        );
        // Its siblings' pages change only if it brought holdings along
        // (a reconnection); its shares come with the next tick (within
        // TICK; until then its page gives it the device but for a ppm, so
        // its first launches are not held back and its queue stays short),
        // which keeps admitting a process independent of how many others
        // there are.
        if reconnect {
            self.publish_memory(&name);
        } else {
            self.publish_memory_of(&name, id);
        }
        (id, name)
    }

    /// What the tenant of `peer` has on the device `uuid`, for a process
    /// that asks without being connected (NVML in a process that never
    /// initialised CUDA): the tenant's name, its limit there (resolved
    /// against `total` and `ordinal` as the asker sees the device when no
    /// process of the tenant is on it; `u32::MAX`, an unknown ordinal,
    /// matches no per-ordinal limit), what its processes reserved, and
    /// their host pids. Changes nothing.
    pub fn view(&self, peer: &Peer, uuid: &Uuid, total: u64, ordinal: u32) -> View {
        let (name, limits) = self.source.classify(peer);
        let t = self.tenants.get(&name);
        // A ledger speaks for the device while a process of the tenant is on
        // it (its total is then known; a ledger its last process left keeps
        // a total of 0, against which limits resolve to nothing).
        let (limit, reserved) = match t.and_then(|t| t.ledgers.get(uuid)) {
            Some(l) if l.total > 0 => (l.limit, l.reserved),
            _ => {
                let l = DevLedger {
                    ordinal,
                    total,
                    ..DevLedger::default()
                };
                (resolve_limit(t.map_or(&limits, |t| &t.limits), uuid, &l), 0)
            }
        };
        let pids = t
            .map(|t| {
                t.procs
                    .iter()
                    .filter_map(|id| self.procs.get(id))
                    .filter(|p| p.devs.iter().any(|d| d.uuid == *uuid))
                    .map(|p| p.peer.pid)
                    .collect()
            })
            .unwrap_or_default();
        View {
            tenant: name,
            limit,
            reserved,
            pids,
        }
    }

    /// A process reserves `bytes` on its device `dev`.
    pub fn reserve(&mut self, id: ConnId, dev: u32, bytes: u64) -> Reserve {
        let Some(p) = self.procs.get(&id) else {
            return Reserve::Denied;
        };
        let Some(pd) = p.devs.get(dev as usize) else {
            return Reserve::Denied;
        };
        let (uuid, total, tenant) = (pd.uuid, pd.total, p.tenant.clone());
        let Some(t) = self.tenants.get_mut(&tenant) else {
            return Reserve::Denied;
        };
        let siblings: Vec<ConnId> = t
            .procs
            .iter()
            .copied()
            .filter(|s| {
                *s != id
                    && self
                        .procs
                        .get(s)
                        .is_some_and(|q| q.devs.iter().any(|d| d.uuid == uuid))
            })
            .collect();
        let l = ledger_for(t, uuid, dev, total);
        let remaining = l.limit.saturating_sub(l.reserved);
        if bytes > total {
            // Never fits the device, whatever the tenant's limit.
            l.denials += 1;
            return Reserve::Denied;
        }
        if bytes > remaining {
            // Siblings may hold reservation they do not use (their own page
            // says how much: a claim, used only to decide whether to ask).
            let unused: u64 = siblings
                .iter()
                .filter_map(|s| self.procs.get(s))
                .map(|q| {
                    let i = q.devs.iter().position(|d| d.uuid == uuid).unwrap_or(0);
                    let used = q
                        .view
                        .as_ref()
                        .map_or(0, |v| v.page().dev[i].mem_used.load(Ordering::Relaxed));
                    q.devs[i].granted.saturating_sub(used)
                })
                .sum();
            if unused > 0 && bytes <= remaining.saturating_add(unused) {
                let who = siblings
                    .iter()
                    .filter_map(|s| {
                        let i = self
                            .procs
                            .get(s)?
                            .devs
                            .iter()
                            .position(|d| d.uuid == uuid)?;
                        Some((*s, i as u32))
                    })
                    .collect();
                return Reserve::Reclaim(who);
            }
            l.denials += 1;
            return Reserve::Denied;
        }
        let n = 1 + siblings.len() as u64;
        let spare = if l.limit == u64::MAX {
            CHUNK
        } else {
            ((remaining - bytes) / (4 * n)).min(CHUNK)
        };
        // `bytes` is at most the device's size, so the sums stay exact
        // (saturating only against a tenant's own lies about that size).
        let grant = bytes.saturating_add(spare / GRANULARITY * GRANULARITY);
        l.reserved = l.reserved.saturating_add(grant);
        l.high_water = l.high_water.max(l.reserved);
        if let Some(pd) = self
            .procs
            .get_mut(&id)
            .and_then(|p| p.devs.get_mut(dev as usize))
        {
            pd.granted = pd.granted.saturating_add(grant);
        }
        self.publish_memory(&tenant);
        Reserve::Granted(grant)
    }

    /// A final refusal after a reclaim did not free enough.
    pub fn deny(&mut self, id: ConnId, dev: u32) {
        if let Some((t, uuid)) = self
            .procs
            .get(&id)
            .and_then(|p| Some((p.tenant.clone(), p.devs.get(dev as usize)?.uuid)))
        {
            if let Some(l) = self
                .tenants
                .get_mut(&t)
                .and_then(|t| t.ledgers.get_mut(&uuid))
            {
                l.denials += 1;
            }
        }
    }

    /// A process returns `bytes` of reservation on `dev` (never more than it holds).
    pub fn release(&mut self, id: ConnId, dev: u32, bytes: u64) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(pd) = p.devs.get_mut(dev as usize) else {
            return;
        };
        let b = bytes.min(pd.granted);
        pd.granted -= b;
        let (uuid, tenant) = (pd.uuid, p.tenant.clone());
        if let Some(l) = self
            .tenants
            .get_mut(&tenant)
            .and_then(|t| t.ledgers.get_mut(&uuid))
        {
            l.reserved = l.reserved.saturating_sub(b);
        }
        self.publish_memory(&tenant);
    }

    /// A process is gone (exited, killed, disconnected): everything it held
    /// goes back to its tenant's ledgers.
    pub fn remove(&mut self, id: ConnId) {
        let Some(p) = self.procs.remove(&id) else {
            return;
        };
        if let Some(t) = self.tenants.get_mut(&p.tenant) {
            t.procs.remove(&id);
            for d in &p.devs {
                // The device's size, as the processes that remain report it.
                let total = t
                    .procs
                    .iter()
                    .filter_map(|s| self.procs.get(s))
                    .flat_map(|q| q.devs.iter())
                    .filter(|e| e.uuid == d.uuid)
                    .map(|e| e.total)
                    .min()
                    .unwrap_or(0);
                if let Some(l) = t.ledgers.get_mut(&d.uuid) {
                    l.reserved = l.reserved.saturating_sub(d.granted);
                    if total != l.total {
                        l.total = total;
                        if total > 0 {
                            l.limit = resolve_limit(&t.limits, &d.uuid, l);
                        }
                    }
                }
            }
            if t.procs.is_empty() && !t.configured {
                self.tenants.remove(&p.tenant);
            } else {
                self.publish_memory(&p.tenant);
            }
        }
    }

    /// A new configuration: limits change, tenants come and go, processes
    /// may move to another tenant (their reservations move with them).
    /// Returns the processes (and their ordinal of the device) whose tenant
    /// is over a lowered memory limit (to be asked for their unused
    /// reservation there).
    pub fn reload(&mut self, source: Box<dyn PolicySource>, now: u64) -> Vec<(ConnId, u32)> {
        self.source = source;
        self.reapply(now)
    }

    /// What the source says now (it changed: a pod was annotated or
    /// deleted), applied as [`State::reload`] does.
    pub fn reapply(&mut self, now: u64) -> Vec<(ConnId, u32)> {
        for t in self.tenants.values_mut() {
            t.configured = false;
        }
        self.declare_tenants();
        let ids: Vec<ConnId> = self.procs.keys().copied().collect();
        for id in ids {
            let (old, new, limits) = {
                let p = &self.procs[&id];
                let (name, limits) = self.source.classify(&p.peer);
                (p.tenant.clone(), name, limits)
            };
            if old != new {
                let p = self.procs.get_mut(&id).expect("listed");
                p.tenant = new.clone();
                let devs = p.devs.clone();
                if let Some(t) = self.tenants.get_mut(&old) {
                    t.procs.remove(&id);
                    for d in &devs {
                        if let Some(l) = t.ledgers.get_mut(&d.uuid) {
                            l.reserved = l.reserved.saturating_sub(d.granted);
                        }
                    }
                }
                let t = self
                    .tenants
                    .entry(new.clone())
                    .or_insert_with(|| tenant_for_spec(&new, &limits, false));
                t.procs.insert(id);
                for (i, d) in devs.iter().enumerate() {
                    let l = ledger_for(t, d.uuid, i as u32, d.total);
                    l.reserved = l.reserved.saturating_add(d.granted);
                    l.high_water = l.high_water.max(l.reserved);
                }
            }
        }
        // Limits of every tenant, resolved again.
        let defaults = self.source.defaults();
        let mut over = Vec::new();
        let names: Vec<String> = self.tenants.keys().cloned().collect();
        for name in names {
            let t = self.tenants.get_mut(&name).expect("listed");
            if !t.configured {
                // A tenant the source makes up for its processes: what the
                // source says of them now.
                t.limits = t
                    .procs
                    .first()
                    .and_then(|id| self.procs.get(id))
                    .map_or_else(|| defaults.clone(), |p| self.source.classify(&p.peer).1);
            }
            for (uuid, l) in t.ledgers.iter_mut() {
                l.limit = resolve_limit(&t.limits, uuid, l);
            }
            if t.ledgers.values().any(|l| l.reserved > l.limit) {
                for id in &t.procs {
                    let Some(p) = self.procs.get(id) else {
                        continue;
                    };
                    for (i, d) in p.devs.iter().enumerate() {
                        if t.ledgers.get(&d.uuid).is_some_and(|l| l.reserved > l.limit) {
                            over.push((*id, i as u32));
                        }
                    }
                }
            }
        }
        self.tenants
            .retain(|_, t| t.configured || !t.procs.is_empty());
        let names: Vec<String> = self.tenants.keys().cloned().collect();
        for n in &names {
            self.publish_memory(n);
        }
        self.tick(now);
        over
    }

    /// Writes a tenant's memory limits and reservations into its processes'
    /// budget pages.
    fn publish_memory(&self, tenant: &str) {
        let Some(t) = self.tenants.get(tenant) else {
            return;
        };
        for id in &t.procs {
            self.publish_memory_of(tenant, *id);
        }
    }

    /// Writes them into one process's page.
    fn publish_memory_of(&self, tenant: &str, id: ConnId) {
        let (Some(t), Some(p)) = (self.tenants.get(tenant), self.procs.get(&id)) else {
            return;
        };
        {
            p.budget.write(|page| {
                for (i, d) in p.devs.iter().enumerate() {
                    if let (Some(pd), Some(l)) = (page.dev.get(i), t.ledgers.get(&d.uuid)) {
                        pd.mem_limit.store(l.limit, Ordering::Relaxed);
                        pd.mem_reserved.store(l.reserved, Ordering::Relaxed);
                        pd.mem_mine.store(d.granted, Ordering::Relaxed);
                    }
                }
                page.devices.store(p.devs.len() as u32, Ordering::Relaxed);
                page.host_pid.store(p.peer.pid, Ordering::Relaxed);
            });
        }
    }

    /// Every tick: who has work, each tenant's share of each device, each
    /// process's part of it, the holds for latency-critical tenants.
    pub fn tick(&mut self, now: u64) {
        let dt = now.saturating_sub(self.last_tick_ns);
        self.last_tick_ns = now;
        // Demand and achieved time from the process pages.
        for p in self.procs.values_mut() {
            let Some(v) = &p.view else { continue };
            for (i, d) in p.devs.iter_mut().enumerate() {
                let pd = &v.page().dev[i];
                let launches = pd.launches.load(Ordering::Relaxed);
                if launches != d.launches_seen {
                    d.launches_seen = launches;
                    d.active_until_ns = now + ACTIVE_NS;
                }
                let charged = pd.charged_ns.load(Ordering::Relaxed);
                if dt > 0 {
                    let delta = charged.saturating_sub(d.charged_seen) as u128;
                    d.achieved_ppm = (delta * 1_000_000 / dt as u128).min(1_000_000) as u32;
                }
                d.charged_seen = charged;
                let wait = pd.throttle_wait_ns.load(Ordering::Relaxed);
                d.wait_delta_s = wait.saturating_sub(d.wait_seen) as f64 / 1e9;
                d.wait_seen = wait;
            }
        }
        // Devices and who is on them.
        let mut devices: BTreeMap<Uuid, BTreeMap<String, Vec<(ConnId, usize)>>> = BTreeMap::new();
        for p in self.procs.values() {
            for (i, d) in p.devs.iter().enumerate() {
                devices
                    .entry(d.uuid)
                    .or_default()
                    .entry(p.tenant.clone())
                    .or_default()
                    .push((p.id, i));
            }
        }
        let mut writes: Vec<Write> = Vec::new();
        for (uuid, tenants) in &devices {
            let names: Vec<&String> = tenants.keys().collect();
            let active = |(id, i): &(ConnId, usize)| self.procs[id].active(*i, now);
            let lc = |n: &String| self.tenants[n].limits.class == Class::LatencyCritical;
            let lc_active = names
                .iter()
                .any(|n| lc(n) && tenants[*n].iter().any(active));
            // Latency-critical tenants with a process here, idle or not.
            let lc_here = names.iter().filter(|n| lc(n)).count();
            // Best-effort tenants hold while a latency-critical one has work:
            // they take no share then.
            let held = |n: &String| lc_active && self.tenants[n].limits.class == Class::BestEffort;
            let claims: Vec<Claim> = names
                .iter()
                .map(|n| {
                    let l = &self.tenants[*n].limits;
                    Claim {
                        request: l.compute_request,
                        limit: l.compute_limit,
                        weight: l.weight,
                        active: !held(n) && tenants[*n].iter().any(active),
                    }
                })
                .collect();
            let active_procs = names
                .iter()
                .filter(|n| !held(n))
                .flat_map(|n| tenants[*n].iter())
                .filter(|m| active(m))
                .count();
            // Turns are coordinated among two or more processes with work,
            // unless a latency-critical tenant has work (it runs when it
            // wants; best-effort tenants hold, the others are paced by share,
            // with room left for the switches).
            let slotted = active_procs > 1 && !lc_active;
            let capacity = if active_procs > 1 && !slotted {
                1_000_000 - SWITCH_MARGIN_PPM
            } else {
                1_000_000
            };
            let shares = fairshare::shares_of(&claims, capacity);
            let busy: u32 = shares.iter().sum();
            let first = writes.len();
            for (k, n) in names.iter().enumerate() {
                let members = &tenants[*n];
                let flags: Vec<bool> = members.iter().map(active).collect();
                let share = if claims[k].active {
                    shares[k]
                } else {
                    idle_share(&claims[k], busy)
                };
                let class = self.tenants[*n].limits.class;
                let mut parts = fairshare::split(share, &flags);
                // The whole device (unpaced, a deeper queue) only to a
                // process with work, and never beside another tenant's
                // latency-critical processes.
                let lc_beside = lc_here > usize::from(class == Class::LatencyCritical);
                for (p, on) in parts.iter_mut().zip(&flags) {
                    if lc_beside || !on {
                        *p = (*p).min(SHORT_OF_WHOLE_PPM);
                    }
                }
                let hold = if class == Class::BestEffort && lc_active {
                    now + HOLD_NS
                } else {
                    0
                };
                for (((id, i), part), on) in members.iter().zip(parts).zip(flags) {
                    writes.push(Write {
                        id: *id,
                        dev: *i,
                        share: part,
                        class: class.code(),
                        hold,
                        slot: None,
                        on,
                    });
                }
                if let Some(t) = self.tenants.get_mut(*n) {
                    t.shares.insert(*uuid, share);
                }
            }
            if slotted {
                let members = &mut writes[first..];
                let n = members.iter().filter(|w| w.on && w.share > 0).count() as u64;
                let cycle = SLOT_MIN_CYCLE_NS.max(n * SLOT_PER_PROCESS_NS);
                let given = cycle - SLOT_LEAD_NS;
                let anchor = *self.anchors.entry(*uuid).or_insert(now);
                // Back to back, each opening a lead-in before its start.
                let mut start = SLOT_LEAD_NS;
                for w in members.iter_mut().filter(|w| w.on && w.share > 0) {
                    let len = given * w.share as u64 / 1_000_000;
                    w.slot = Some((anchor, cycle, start - SLOT_LEAD_NS, len + SLOT_LEAD_NS));
                    start += len;
                }
            }
        }
        for w in writes {
            let Some(p) = self.procs.get_mut(&w.id) else {
                continue;
            };
            if let Some(d) = p.devs.get_mut(w.dev) {
                d.share_ppm = w.share;
            }
            let page = p.budget.page();
            let Some(pd) = page.dev.get(w.dev) else {
                continue;
            };
            let (anchor, cycle, offset, len) = w.slot.unwrap_or((0, 0, 0, 0));
            let changed = pd.slot_len_ns.load(Ordering::Relaxed) != len
                || pd.slot_anchor_ns.load(Ordering::Relaxed) != anchor
                || pd.slot_cycle_ns.load(Ordering::Relaxed) != cycle
                || pd.slot_offset_ns.load(Ordering::Relaxed) != offset
                || pd.share_ppm.load(Ordering::Relaxed) != w.share
                || pd.class.load(Ordering::Relaxed) != w.class
                || pd.hold_until_ns.load(Ordering::Relaxed) != w.hold;
            if changed {
                // One update: a reader never combines halves of two slots.
                p.budget.write(|page| {
                    let pd = &page.dev[w.dev];
                    pd.slot_anchor_ns.store(anchor, Ordering::Relaxed);
                    pd.slot_cycle_ns.store(cycle, Ordering::Relaxed);
                    pd.slot_offset_ns.store(offset, Ordering::Relaxed);
                    pd.slot_len_ns.store(len, Ordering::Relaxed);
                    pd.share_ppm.store(w.share, Ordering::Relaxed);
                    pd.class.store(w.class, Ordering::Relaxed);
                    pd.hold_until_ns.store(w.hold, Ordering::Relaxed);
                });
            }
            page.written_ns.store(now, Ordering::Relaxed);
        }
    }
}

/// What the tick writes into one process's page for one device.
struct Write {
    id: ConnId,
    dev: usize,
    share: u32,
    class: u32,
    hold: u64,
    /// (anchor, cycle, offset, length) of its slot, when turns are coordinated.
    slot: Option<(u64, u64, u64, u64)>,
    /// Whether it has work.
    on: bool,
}

/// What a process of an idle tenant is given: its request, or the time the
/// active tenants leave if that is more, never above its limit; so that its
/// first launches are not held back while the broker notices them (they
/// count as demand at once, and the next tick shares the device anew).
fn idle_share(c: &Claim, busy: u32) -> u32 {
    c.request
        .0
        .max(1_000_000u32.saturating_sub(busy))
        .min(c.limit.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tslice_proto::HelloDevice;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn config() -> Config {
        Config::parse(
            r#"
[defaults]
memory-limit = "8GiB"
[[tenant]]
name = "a"
cgroup = "/a"
memory-limit = "1GiB"
[[tenant]]
name = "b"
cgroup = "/b"
weight = 3
"#,
            "t",
        )
        .unwrap()
    }

    fn hello(reconnect: Option<(u64, u64)>) -> Hello {
        let (granted, used) = reconnect.unwrap_or((0, 0));
        Hello {
            pid: 1,
            flags: if reconnect.is_some() {
                HELLO_RECONNECT
            } else {
                0
            },
            devices: vec![HelloDevice {
                uuid: [1; 16],
                total: 80 * GIB,
                granted,
                used,
            }],
        }
    }

    fn peer(cgroup: &str) -> Peer {
        Peer {
            pid: 1,
            uid: 0,
            gid: 0,
            cgroup: cgroup.into(),
        }
    }

    fn admit(s: &mut State, cgroup: &str) -> ConnId {
        s.admit(
            peer(cgroup),
            &hello(None),
            Budget::new().unwrap().0,
            None,
            1,
        )
        .0
    }

    #[test]
    fn a_tenants_processes_share_one_ledger_and_never_pass_it() {
        let mut s = State::new(Box::new(config()));
        let p1 = admit(&mut s, "/a/x");
        let p2 = admit(&mut s, "/a/y");
        let mut held = 0;
        for (p, ask) in [(p1, 300 * MIB), (p2, 300 * MIB), (p1, 200 * MIB)] {
            match s.reserve(p, 0, ask) {
                Reserve::Granted(g) => {
                    assert!(g >= ask);
                    held += g;
                }
                other => panic!("{other:?}"),
            }
        }
        let l = &s.tenants["a"].ledgers[&[1; 16]];
        assert_eq!(l.reserved, held);
        assert!(l.reserved <= GIB);
        // What is left cannot be exceeded, whatever is asked.
        let left = GIB - l.reserved;
        assert!(matches!(
            s.reserve(p2, 0, left + 2 * MIB),
            Reserve::Reclaim(_) | Reserve::Denied
        ));
        assert_eq!(s.reserve(p2, 0, left), Reserve::Granted(left));
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].reserved, GIB);
        // A process that goes returns everything.
        s.remove(p1);
        assert!(s.tenants["a"].ledgers[&[1; 16]].reserved < GIB);
        s.remove(p2);
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].reserved, 0);
        assert!(s.tenants.contains_key("a"), "configured tenants stay");
    }

    #[test]
    fn a_view_is_the_tenants_limit_reservations_and_processes_on_that_device() {
        let mut s = State::new(Box::new(config()));
        // Nobody of the tenant on the device yet: its limit, nothing used.
        let v = s.view(&peer("/a/smi"), &[1; 16], 80 * GIB, 0);
        assert_eq!((v.tenant.as_str(), v.limit, v.reserved), ("a", GIB, 0));
        assert!(v.pids.is_empty());
        let p1 = admit(&mut s, "/a/x");
        s.procs.get_mut(&p1).unwrap().peer.pid = 41;
        let g = match s.reserve(p1, 0, 300 * MIB) {
            Reserve::Granted(g) => g,
            other => panic!("{other:?}"),
        };
        let other = admit(&mut s, "/b");
        s.procs.get_mut(&other).unwrap().peer.pid = 42;
        let v = s.view(&peer("/a/smi"), &[1; 16], 80 * GIB, 0);
        assert_eq!((v.limit, v.reserved), (GIB, g));
        assert_eq!(v.pids, vec![41], "another tenant's process is not shown");
        // Another device: nothing of the tenant's there; the asker is not admitted.
        let v = s.view(&peer("/a/smi"), &[2; 16], 80 * GIB, 1);
        assert_eq!((v.limit, v.reserved, v.pids.len()), (GIB, 0, 0));
        assert_eq!(s.tenants["a"].procs.len(), 1);
        // A device the tenant's last process there left (its ledger stays,
        // with no total), after a reload re-resolved every ledger: the
        // tenant's limit, not nothing.
        let on_two = s
            .admit(
                peer("/a/z"),
                &Hello {
                    pid: 43,
                    flags: 0,
                    devices: vec![HelloDevice {
                        uuid: [2; 16],
                        total: 40 * GIB,
                        granted: 0,
                        used: 0,
                    }],
                },
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(s.view(&peer("/a/smi"), &[2; 16], 40 * GIB, 1).limit, GIB);
        s.remove(on_two);
        s.reapply(2);
        let v = s.view(&peer("/a/smi"), &[2; 16], 40 * GIB, u32::MAX);
        assert_eq!((v.limit, v.reserved, v.pids.len()), (GIB, 0, 0));
        // A tenant without a limit of its own: the defaults'.
        let v = s.view(&peer("/b"), &[1; 16], 80 * GIB, 0);
        assert_eq!((v.limit, v.pids.clone()), (8 * GIB, vec![42]));
    }

    #[test]
    fn unmatched_processes_get_the_defaults_per_user() {
        let mut s = State::new(Box::new(config()));
        let p = admit(&mut s, "/elsewhere/job");
        let q = admit(&mut s, "/elsewhere/other");
        assert_eq!(s.procs[&q].tenant, "default:uid:0", "one ledger per user");
        assert_eq!(s.tenants["default:uid:0"].ledgers[&[1; 16]].limit, 8 * GIB);
        s.remove(p);
        s.remove(q);
        assert!(
            !s.tenants.contains_key("default:uid:0"),
            "gone with its last process"
        );
    }

    #[test]
    fn a_reconnect_rebuilds_the_ledger_from_what_the_process_holds() {
        let mut s = State::new(Box::new(config()));
        let id = s
            .admit(
                peer("/a"),
                &hello(Some((900 * MIB, 700 * MIB))),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].reserved, 900 * MIB);
        assert!(matches!(
            s.reserve(id, 0, 200 * MIB),
            Reserve::Denied | Reserve::Reclaim(_)
        ));
    }

    fn hello_with(total: u64, reconnect: Option<u64>) -> Hello {
        let mut h = hello(reconnect.map(|g| (g, 0)));
        h.devices[0].total = total;
        h
    }

    fn config_text(text: &str) -> Config {
        Config::parse(text, "t").unwrap()
    }

    #[test]
    fn a_share_of_the_device_resolves_against_the_smallest_total_reported() {
        let cfg = "[[tenant]]\nname = \"a\"\ncgroup = \"/a\"\nmemory-limit = \"10%\"\n";
        let mut s = State::new(Box::new(config_text(cfg)));
        let honest = s
            .admit(
                peer("/a"),
                &hello_with(80 * GIB, None),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].limit, 8 * GIB);
        // A process claiming a huge device does not raise the tenant's limit...
        let liar = s
            .admit(
                peer("/a"),
                &hello_with(u64::MAX / 2, None),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].limit, 8 * GIB);
        s.remove(liar);
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].limit, 8 * GIB);
        assert_eq!(s.reserve(honest, 0, 9 * GIB), Reserve::Denied);
        // ...one claiming a small one lowers it, for its own tenant only,
        // and only while it lives.
        let small = s
            .admit(
                peer("/a"),
                &hello_with(40 * GIB, None),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].limit, 4 * GIB);
        // A reload resolves again against what is known.
        s.reload(Box::new(config_text(&cfg.replace("10%", "50%"))), 3);
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].limit, 20 * GIB);
        // A reservation that fits the device as its process reports it is
        // not refused for the liar's smaller one.
        assert!(matches!(
            s.reserve(honest, 0, 12 * GIB),
            Reserve::Granted(_)
        ));
        s.remove(small);
        let l = &s.tenants["a"].ledgers[&[1; 16]];
        assert_eq!(
            (l.total, l.limit),
            (80 * GIB, 40 * GIB),
            "the lie ends with the liar"
        );
        assert!(matches!(
            s.reserve(honest, 0, 20 * GIB),
            Reserve::Granted(_)
        ));
        s.remove(honest);
        assert_eq!(
            s.tenants["a"].ledgers[&[1; 16]].total, 0,
            "nobody reports the device"
        );
        let next = s
            .admit(
                peer("/a"),
                &hello_with(96 * GIB, None),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        let l = &s.tenants["a"].ledgers[&[1; 16]];
        assert_eq!(
            (l.total, l.limit),
            (96 * GIB, 48 * GIB),
            "the next one reports it anew"
        );
        s.remove(next);
    }

    #[test]
    fn what_a_reconnect_claims_to_hold_is_capped_at_the_device() {
        let mut s = State::new(Box::new(config()));
        let honest = s
            .admit(
                peer("/a"),
                &hello_with(80 * GIB, Some(300 * MIB)),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        let liar = s
            .admit(
                peer("/a"),
                &hello_with(80 * GIB, Some(u64::MAX)),
                Budget::new().unwrap().0,
                None,
                1,
            )
            .0;
        assert_eq!(
            s.tenants["a"].ledgers[&[1; 16]].reserved,
            80 * GIB + 300 * MIB
        );
        s.remove(liar);
        assert_eq!(
            s.tenants["a"].ledgers[&[1; 16]].reserved,
            300 * MIB,
            "the honest sibling's holding is still counted"
        );
        s.remove(honest);
        assert_eq!(s.tenants["a"].ledgers[&[1; 16]].reserved, 0);
    }

    #[test]
    fn a_reservation_beyond_the_device_is_refused_without_overflow() {
        let mut s = State::new(Box::new(config_text("")));
        let p = admit(&mut s, "/x");
        for ask in [u64::MAX, u64::MAX - 4096, 80 * GIB + 1] {
            assert_eq!(s.reserve(p, 0, ask), Reserve::Denied, "{ask}");
        }
        let Reserve::Granted(g) = s.reserve(p, 0, 80 * GIB) else {
            panic!("the whole device fits an unlimited tenant")
        };
        assert!(g >= 80 * GIB);
        s.remove(p);
        assert!(s.procs.is_empty());
    }

    #[test]
    fn budget_pages_are_written_under_a_sequence_lock() {
        let mut s = State::new(Box::new(config()));
        let a = admit(&mut s, "/a");
        let b = admit(&mut s, "/b");
        for id in [a, b] {
            s.procs.get_mut(&id).unwrap().devs[0].active_until_ns = u64::MAX;
        }
        let gen = |s: &State| s.procs[&a].budget.page().generation.load(Ordering::Relaxed);
        let before = gen(&s);
        s.tick(20);
        let after = gen(&s);
        assert!(after > before && after % 2 == 0, "{before} -> {after}");
        s.tick(21);
        assert_eq!(gen(&s), after, "nothing changed, nothing written");
        assert!(
            s.procs[&a].budget.page().dev[0]
                .slot_len_ns
                .load(Ordering::Relaxed)
                > 0
        );
    }

    #[test]
    fn a_lowered_limit_refuses_until_under_and_names_who_to_ask() {
        let mut s = State::new(Box::new(config()));
        let p = admit(&mut s, "/a");
        assert!(matches!(s.reserve(p, 0, 600 * MIB), Reserve::Granted(_)));
        let text = "[[tenant]]\nname = \"a\"\ncgroup = \"/a\"\nmemory-limit = \"256MiB\"\n";
        let over = s.reload(Box::new(Config::parse(text, "t").unwrap()), 2);
        assert_eq!(over, vec![(p, 0)]);
        assert_eq!(s.reserve(p, 0, 2 * MIB), Reserve::Denied);
        assert_eq!(
            s.procs[&p].budget.page().dev[0]
                .mem_limit
                .load(Ordering::Relaxed),
            256 * MIB
        );
    }

    #[test]
    fn a_reload_moves_processes_and_their_reservations() {
        let mut s = State::new(Box::new(config()));
        let p = admit(&mut s, "/c");
        let Reserve::Granted(g) = s.reserve(p, 0, 100 * MIB) else {
            panic!()
        };
        let text = "[[tenant]]\nname = \"c\"\ncgroup = \"/c\"\nmemory-limit = \"4GiB\"\n";
        s.reload(Box::new(Config::parse(text, "t").unwrap()), 2);
        assert_eq!(s.procs[&p].tenant, "c");
        assert_eq!(s.tenants["c"].ledgers[&[1; 16]].reserved, g);
        assert!(!s.tenants.contains_key("default:uid:0"));
        assert!(
            !s.tenants.contains_key("a"),
            "tenants removed from the file go"
        );
    }

    /// The share in a process's budget page (device 0), as its shim reads it.
    fn page_share(s: &State, id: ConnId) -> u32 {
        s.procs[&id].budget.page().dev[0]
            .share_ppm
            .load(Ordering::Relaxed)
    }

    /// No process is given the whole device (and its deeper queue) while
    /// another tenant's latency-critical process is on the device, idle or
    /// not; a latency-critical tenant alone with work may have it.
    #[test]
    fn nobody_else_gets_the_whole_device_beside_a_latency_critical_tenant() {
        let cfg = Config::parse(
            "[[tenant]]\nname = \"serving\"\ncgroup = \"/s\"\nclass = \"latency-critical\"\n[[tenant]]\nname = \"other\"\ncgroup = \"/o\"\nclass = \"latency-critical\"\n[[tenant]]\nname = \"batch\"\ncgroup = \"/b\"\n",
            "t",
        )
        .unwrap();
        let mut s = State::new(Box::new(cfg));
        let batch = admit(&mut s, "/b");
        s.procs.get_mut(&batch).unwrap().devs[0].active_until_ns = u64::MAX;
        s.tick(10);
        assert_eq!(s.procs[&batch].devs[0].share_ppm, 1_000_000, "alone");
        let serving = admit(&mut s, "/s");
        s.tick(20);
        assert_eq!(s.procs[&batch].devs[0].share_ppm, SHORT_OF_WHOLE_PPM);
        assert_eq!(page_share(&s, batch), SHORT_OF_WHOLE_PPM);
        // The latency-critical tenant alone with work has it all; beside
        // another latency-critical tenant it would not.
        s.procs.get_mut(&batch).unwrap().devs[0].active_until_ns = 0;
        s.procs.get_mut(&serving).unwrap().devs[0].active_until_ns = u64::MAX;
        s.tick(30);
        assert_eq!(s.procs[&serving].devs[0].share_ppm, 1_000_000);
        let other = admit(&mut s, "/o");
        s.tick(35);
        assert_eq!(s.procs[&serving].devs[0].share_ppm, SHORT_OF_WHOLE_PPM);
        s.remove(other);
        s.remove(serving);
        s.procs.get_mut(&batch).unwrap().devs[0].active_until_ns = u64::MAX;
        s.tick(40);
        assert_eq!(s.procs[&batch].devs[0].share_ppm, 1_000_000, "alone again");
    }

    #[test]
    fn shares_follow_demand_and_weights() {
        let mut s = State::new(Box::new(config()));
        let a = admit(&mut s, "/a");
        let b = admit(&mut s, "/b");
        // Admitted: the device but for a ppm (paced with a short queue)
        // until the first tick.
        assert_eq!(s.procs[&a].devs[0].share_ppm, SHORT_OF_WHOLE_PPM);
        assert_eq!(page_share(&s, a), SHORT_OF_WHOLE_PPM);
        // Nobody has launched yet: each may start at what it would get
        // alone, paced.
        s.tick(10);
        assert_eq!(s.procs[&a].devs[0].share_ppm, SHORT_OF_WHOLE_PPM);
        // One has work: the whole device.
        s.procs.get_mut(&a).unwrap().devs[0].active_until_ns = u64::MAX;
        s.tick(15);
        assert_eq!(s.procs[&a].devs[0].share_ppm, 1_000_000);
        assert_eq!(s.procs[&b].devs[0].share_ppm, 0, "what a leaves");
        // Both launch: weights 1:3.
        let launch = |s: &State, id: ConnId| s.procs[&id].devs[0].launches_seen;
        let _ = launch;
        for id in [a, b] {
            s.procs.get_mut(&id).unwrap().devs[0].active_until_ns = u64::MAX;
        }
        s.tick(20);
        assert_eq!(s.procs[&a].devs[0].share_ppm, 250_000);
        assert_eq!(s.procs[&b].devs[0].share_ppm, 750_000);
        assert_eq!(page_share(&s, a), 250_000);
    }
}

//! `broker`: what the node broker costs and what it achieves, side by side
//! with running without it (issue 7's targets):
//! - allocation latency p50/p99 under the broker vs standalone (p50 within 2x);
//! - the share table redone with the broker (30/70 and 4 x 25% within 2
//!   points; device time lost to switching < 2%, plain time-slicing ~8%);
//! - a latency-critical tenant's p99 beside a saturating best-effort one;
//! - 64 processes starting at once (p99 added < 5 ms);
//! - reaction to a change in demand (< 100 ms);
//! - a tenant alone on a host whose CPUs are oversubscribed: its share of the
//!   device with the broker vs the same program without tslice (within 2
//!   points: the gate must not turn its thread's delays into idle GPU time);
//! - the policy computation for 1000 tenants (< 1 ms).
//!
//! Tenants are cgroups created under this process's own (root needed), as
//! in the tests; the simulated GPU only (the broker's ledgers are tested on
//! the simulator's ground truth).

use crate::env::{bench_src, program, Gpu, Setup};
use crate::report::{field, field_u64, median, progress, verdict, Report, Table};
use crate::run;
use crate::shares::{dev_window, sampler};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tslice_policy::fairshare::{self, Claim};
use tslice_policy::quota::Ppm;
use tslice_tests::{Broker, Cgroups};

pub struct Params {
    pub seconds: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params { seconds: 3.0 }
    }
}

fn with_broker(cmd: &mut Command, b: &Broker) {
    cmd.env("TSLICE_BROKER", &b.socket);
}

/// The policy computation for `n` tenants on one device (median of 200).
fn policy_time(n: usize) -> f64 {
    let claims: Vec<Claim> = (0..n)
        .map(|i| Claim {
            request: Ppm((i as u32 * 37) % 500),
            limit: Ppm(1_000_000 - (i as u32 * 101) % 400_000),
            weight: 1 + (i as u32 % 7),
            active: i % 5 != 0,
        })
        .collect();
    let mut v = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        std::hint::black_box(fairshare::shares(std::hint::black_box(&claims)));
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(&v)
}

/// Allocation latency (p50, p99 ns) of one process.
fn alloc_latency(setup: &Setup, broker: Option<(&Broker, &Cgroups)>) -> Result<(f64, f64), String> {
    let libdir = format!("-L{}", setup.release.display());
    let prog = tslice_tests::build_cuda(&bench_src("alloc_lat.c"), &[&libdir, "-lcuda"]);
    let gpu = Gpu::new(setup)?;
    let mut c = gpu.command_with_shim(&prog, &[]);
    c.arg("20000");
    let c = match broker {
        Some((b, cg)) => {
            with_broker(&mut c, b);
            cg.wrap("a", c)
        }
        None => {
            c.env("TSLICE_HBM_LIMIT", "64GiB");
            c
        }
    };
    let d = run::run(c)?;
    Ok((field(&d.out, "p50_ns")?, field(&d.out, "p99_ns")?))
}

/// 64 processes that each allocate 8 MiB and exit, started at once: the
/// p99 of their wall times (ms).
fn start_64(setup: &Setup, broker: Option<(&Broker, &Cgroups)>) -> Result<f64, String> {
    let libdir = format!("-L{}", setup.release.display());
    let prog = tslice_tests::build_cuda(
        &tslice_tests::cuda_src("tenant.c"),
        &[&libdir, "-lcuda", "-lpthread"],
    );
    let gpu = Gpu::new(setup)?;
    let mut kids = Vec::new();
    for i in 0..64 {
        let mut c = gpu.command_with_shim(&prog, &[]);
        c.args(["grab", "8", "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let c = match broker {
            Some((b, cg)) => {
                with_broker(&mut c, b);
                cg.wrap(if i % 2 == 0 { "a" } else { "b" }, c)
            }
            None => {
                c.env("TSLICE_HBM_LIMIT", "1GiB");
                c
            }
        };
        let mut c = c;
        let t0 = Instant::now();
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        kids.push((t0, child));
    }
    let mut times: Vec<f64> = Vec::new();
    for (t0, k) in kids {
        let o = k.wait_with_output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "a starting process failed: {}",
                String::from_utf8_lossy(&o.stdout)
            ));
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() * 99 / 100])
}

/// Achieved shares (%) and switching (%) for tenants with these caps, under
/// the broker (requests = limits = caps) or plain time-slicing.
fn shares(
    setup: &Setup,
    caps: &[u32],
    broker: bool,
    p: &Params,
) -> Result<(Vec<f64>, f64), String> {
    let cg = Cgroups::new();
    let cfg: String = caps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "[[tenant]]\nname = \"t{i}\"\ncgroup = \"{}\"\ncompute-request = \"{c}%\"\ncompute-limit = \"{c}%\"\n",
                cg.path(&format!("t{i}"))
            )
        })
        .collect();
    let b = broker.then(|| Broker::start(&cfg));
    let prog = program(&tslice_tests::cuda_src("spin_loop.cu"));
    let gpu = Gpu::new(setup)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = gpu.dev_dir().map(|d| sampler(d, stop.clone()));
    let mut kids = Vec::new();
    for i in 0..caps.len() {
        let mut c = if broker {
            gpu.command_with_shim(&prog, &[])
        } else {
            gpu.command(&prog)
        };
        c.args(["kernels", "200", &p.seconds.to_string()]);
        if let Some(b) = &b {
            with_broker(&mut c, b);
        }
        kids.push(run::spawn(cg.wrap(&format!("t{i}"), c))?);
    }
    let done: Vec<run::Done> = kids
        .into_iter()
        .map(run::finish)
        .collect::<Result<_, _>>()?;
    stop.store(true, Ordering::Relaxed);
    let samples = sampling
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let from = done.iter().map(|d| d.t_start).max().unwrap_or(0) + 600_000_000;
    let to = done
        .iter()
        .filter_map(|d| d.t_end)
        .min()
        .unwrap_or(0)
        .saturating_sub(100_000_000);
    if to < from + 500_000_000 {
        return Err("the tenants overlapped too little".into());
    }
    let m = gpu.monitor()?.ok_or("no simulator")?;
    let s = done
        .iter()
        .map(|d| 100.0 * m.busy_between(d.pid, from, to) as f64 / (to - from) as f64)
        .collect();
    let sw = dev_window(&samples, from, to).map_or(f64::NAN, |w| w.switching_pct);
    Ok((s, sw))
}

/// [`shares`] of one tenant with the whole device (request and limit 100%)
/// while `hogs` threads of this process spin on the CPUs.
fn busy_host(setup: &Setup, broker: bool, hogs: usize, p: &Params) -> Result<f64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let spinning: Vec<_> = (0..hogs)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let r = shares(setup, &[100], broker, p);
    stop.store(true, Ordering::Relaxed);
    for h in spinning {
        let _ = h.join();
    }
    Ok(r?.0[0])
}

/// A latency-critical victim's p50/p99 (us): solo, beside a saturating
/// best-effort tenant under the broker, and beside it without tslice.
fn victim(setup: &Setup) -> Result<[(f64, f64); 3], String> {
    let cg = Cgroups::new();
    let b = Broker::start(&format!(
        "[[tenant]]\nname = \"serving\"\ncgroup = \"{}\"\nclass = \"latency-critical\"\n[[tenant]]\nname = \"batch\"\ncgroup = \"{}\"\nclass = \"best-effort\"\n",
        cg.path("serving"),
        cg.path("batch")
    ));
    let vprog = program(&tslice_tests::cuda_src("victim.cu"));
    let bprog = program(&tslice_tests::cuda_src("spin_loop.cu"));
    let mut out = [(0.0, 0.0); 3];
    for (k, (neighbour, enforce)) in [(false, true), (true, true), (true, false)]
        .into_iter()
        .enumerate()
    {
        let gpu = Gpu::new(setup)?;
        let n = if neighbour {
            let mut c = if enforce {
                gpu.command_with_shim(&bprog, &[])
            } else {
                gpu.command(&bprog)
            };
            c.args(["kernels", "200", "3.2"]);
            if enforce {
                with_broker(&mut c, &b);
            }
            let child = run::spawn(cg.wrap("batch", c))?;
            // The neighbour is running (ground truth) before the victim starts.
            let t0 = Instant::now();
            while gpu.monitor().ok().flatten().is_none_or(|m| {
                m.snapshot()
                    .processes
                    .iter()
                    .all(|p| p.busy_ns < 100_000_000)
            }) {
                if t0.elapsed().as_secs() > 30 {
                    return Err("the neighbour never ran".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Some(child)
        } else {
            None
        };
        let mut c = if enforce {
            gpu.command_with_shim(&vprog, &[])
        } else {
            gpu.command(&vprog)
        };
        c.args(["200", "2"]);
        if enforce {
            with_broker(&mut c, &b);
        }
        let d = run::run(cg.wrap("serving", c))?;
        if let Some(n) = n {
            run::finish(n)?;
        }
        out[k] = (field(&d.out, "p50_us")?, field(&d.out, "p99_us")?);
    }
    Ok(out)
}

/// Time from a second tenant's first launches until the broker has split
/// the device (ms), by polling its status.
fn reaction(setup: &Setup) -> Result<f64, String> {
    let cg = Cgroups::new();
    let b = Broker::start(&format!(
        "[[tenant]]\nname = \"a\"\ncgroup = \"{}\"\n[[tenant]]\nname = \"b\"\ncgroup = \"{}\"\n",
        cg.path("a"),
        cg.path("b")
    ));
    let prog = program(&tslice_tests::cuda_src("spin_loop.cu"));
    let gpu = Gpu::new(setup)?;
    let mut c = gpu.command_with_shim(&prog, &[]);
    c.args(["kernels", "200", "2"]);
    with_broker(&mut c, &b);
    let a = run::spawn(cg.wrap("a", c))?;
    let share_of = |name: &str| -> Option<f64> {
        let st = b.try_status().ok()?;
        st["tenants"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)?["devices"][0]["share_target"]
            .as_f64()
    };
    let t0 = Instant::now();
    while share_of("a").is_none_or(|s| s < 0.99) {
        if t0.elapsed().as_secs() > 30 {
            return Err("tenant a never got the device".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut c = gpu.command_with_shim(&prog, &[]);
    c.args(["kernels", "200", "1"]);
    with_broker(&mut c, &b);
    let bchild = run::spawn(cg.wrap("b", c))?;
    // b's first launch: the moment the simulated device first runs it.
    let t_b = loop {
        let m = gpu.monitor()?.ok_or("no simulator")?;
        if m.snapshot()
            .processes
            .iter()
            .any(|p| p.pid == bchild.id() && p.busy_ns > 0)
        {
            break Instant::now();
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    };
    while share_of("a").is_none_or(|s| s > 0.6) {
        if t_b.elapsed().as_secs() > 10 {
            return Err("the broker never split the device".into());
        }
    }
    let ms = t_b.elapsed().as_secs_f64() * 1e3;
    run::finish(bchild)?;
    run::finish(a)?;
    Ok(ms)
}

pub fn run(setup: &Setup, p: &Params, rep: &mut Report) -> Result<(), String> {
    if !Path::new("/proc/self/cgroup").exists() {
        return Err("the broker benchmark needs /proc and cgroup v2".into());
    }
    rep.line(
        "The broker (`tslice-broker`, release build) with tenants as cgroups, beside the same \
         programs without it. Shares and latencies from the simulator's ground truth.",
    );
    rep.blank();
    let mut t = Table::new(&["measure", ">with the broker", ">without", ">target", ""]);

    progress("broker: policy computation");
    let pol = policy_time(1000);
    t.row(vec![
        "fair shares of 1000 tenants".into(),
        format!("{pol:.1} us"),
        "-".into(),
        "< 1 ms".into(),
        verdict(pol < 1000.0),
    ]);

    progress("broker: allocation latency");
    let cg = Cgroups::new();
    let b = Broker::start(&format!(
        "[[tenant]]\nname = \"a\"\ncgroup = \"{}\"\nmemory-limit = \"64GiB\"\n[[tenant]]\nname = \"b\"\ncgroup = \"{}\"\n",
        cg.path("a"),
        cg.path("b")
    ));
    let (b50, b99) = alloc_latency(setup, Some((&b, &cg)))?;
    let (s50, s99) = alloc_latency(setup, None)?;
    t.row(vec![
        "cuMemAlloc p50 / p99".into(),
        format!("{b50:.0} / {b99:.0} ns"),
        format!("{s50:.0} / {s99:.0} ns (standalone cap)"),
        "p50 within 2x".into(),
        verdict(b50 <= 2.0 * s50),
    ]);

    progress("broker: 64 processes at once");
    let with = start_64(setup, Some((&b, &cg)))?;
    let without = start_64(setup, None)?;
    t.row(vec![
        "64 processes starting at once, p99 wall time".into(),
        format!("{with:.1} ms"),
        format!("{without:.1} ms"),
        "< 5 ms added".into(),
        verdict(with - without < 5.0),
    ]);
    drop(b);

    progress("broker: reaction to demand");
    let r = reaction(setup)?;
    t.row(vec![
        "a second tenant's launches to a split device".into(),
        format!("{r:.1} ms"),
        "-".into(),
        "< 100 ms".into(),
        verdict(r < 100.0),
    ]);

    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = 4 * cpus;
    progress(format!("broker: a tenant alone beside {hogs} CPU hogs"));
    let with = busy_host(setup, true, hogs, p)?;
    let without = busy_host(setup, false, hogs, p)?;
    t.row(vec![
        format!("a tenant alone, {hogs} threads spinning on {cpus} CPUs: its share of the GPU"),
        format!("{with:.1}%"),
        format!("{without:.1}%"),
        "within 2 points".into(),
        verdict(with >= without - 2.0),
    ]);
    rep.table(&t);

    let mut all = true;
    for (name, caps) in [
        ("30% / 70%", &[30u32, 70][..]),
        ("4 x 25%", &[25, 25, 25, 25][..]),
    ] {
        progress(format!("broker: shares {name}"));
        let (bs, bsw) = shares(setup, caps, true, p)?;
        let (ps, psw) = shares(setup, caps, false, p)?;
        rep.blank();
        rep.line(format!("**{name}**: device time lost to switching {bsw:.2}% with the broker, {psw:.2}% plain time-slicing (target < 2%)"));
        rep.blank();
        let mut t = Table::new(&[
            "tenant",
            ">target",
            ">with the broker",
            ">error (pts)",
            "",
            ">plain time-slicing",
        ]);
        for (i, cap) in caps.iter().enumerate() {
            let err = bs[i] - *cap as f64;
            all &= err.abs() <= 2.0;
            t.row(vec![
                format!("{}", i + 1),
                format!("{cap}%"),
                format!("{:.2}%", bs[i]),
                format!("{err:+.2}"),
                verdict(err.abs() <= 2.0),
                format!("{:.2}%", ps[i]),
            ]);
        }
        all &= bsw < 2.0;
        rep.table(&t);
    }

    progress("broker: latency-critical victim");
    let v = victim(setup)?;
    rep.blank();
    rep.line(format!(
        "Latency-critical tenant (200 us kernel + synchronize, p50/p99): solo {:.0}/{:.0} us; beside a saturating \
         best-effort tenant: {:.0}/{:.0} us with the broker, {:.0}/{:.0} us without tslice.",
        v[0].0, v[0].1, v[1].0, v[1].1, v[2].0, v[2].1
    ));
    rep.blank();
    rep.line(format!(
        "Share and switching targets with the broker: {}",
        verdict(all)
    ));
    let _ = field_u64;
    Ok(())
}

//! Issue 7: GPU-time shares handed out by the broker (requests, limits,
//! weights, work-conserving), measured on the time-sliced simulated GPU's
//! run record. Tenants are cgroups; one test at a time (they measure time
//! on a small CI machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use tslice_tests::shim;
use tslice_tests::{build_cuda, checks, cuda_src, field, Broker, Cgroups, SimGpu};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn spin_loop() -> PathBuf {
    build_cuda(&cuda_src("spin_loop.cu"), &[])
}

/// A saturating tenant process (200 us kernels for `secs`) in cgroup `cg`.
fn start(
    gpu: &SimGpu,
    broker: &Broker,
    cgroups: &Cgroups,
    cg: &str,
    prog: &Path,
    secs: &str,
) -> Child {
    let mut c = gpu.command(prog);
    c.args(["kernels", "200", secs])
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &broker.socket);
    cgroups
        .wrap(cg, c)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

struct Run {
    pid: u32,
    t_start: u64,
    t_end: u64,
}

fn finish(c: Child) -> Run {
    let pid = c.id();
    let o = c.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("OK FAILS=0"),
        "pid {pid}:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        pid,
        t_start: field(&out, "t_start") as u64,
        t_end: field(&out, "t_end") as u64,
    }
}

/// Percent of the device the pids got between `from` and `to` (ground truth).
fn share(gpu: &SimGpu, pids: &[u32], from: u64, to: u64) -> f64 {
    let m = gpu.monitor(0);
    let busy: u64 = pids.iter().map(|p| m.busy_between(*p, from, to)).sum();
    100.0 * busy as f64 / (to - from) as f64
}

/// The steady window of runs that overlap: from 0.5 s after the last start
/// to 0.1 s before the first end.
fn window(runs: &[&Run]) -> (u64, u64) {
    let from = runs.iter().map(|r| r.t_start).max().unwrap() + 500_000_000;
    let to = runs.iter().map(|r| r.t_end).min().unwrap() - 100_000_000;
    assert!(to > from + 800_000_000, "window too short");
    (from, to)
}

fn tenants(cg: &Cgroups, a: &str, b: &str) -> String {
    format!("[[tenant]]\nname = \"a\"\ncgroup = \"{}\"\n{a}\n[[tenant]]\nname = \"b\"\ncgroup = \"{}\"\n{b}\n", cg.path("a"), cg.path("b"))
}

/// Every share here is device time over a window of the host's clock:
/// measured up to three times ([`tslice_tests::measured`]).
#[test]
fn four_processes_do_not_get_more_than_one_at_equal_weight() {
    let _s = serial();
    let prog = spin_loop();
    tslice_tests::measured(|_| {
        let cg = Cgroups::new();
        let broker = Broker::start(&tenants(&cg, "", ""));
        let gpu = SimGpu::new();
        let four: Vec<Child> = (0..4)
            .map(|i| start(&gpu, &broker, &cg, &format!("a/p{i}"), &prog, "3"))
            .collect();
        let one = start(&gpu, &broker, &cg, "b", &prog, "3");
        let four: Vec<Run> = four.into_iter().map(finish).collect();
        let one = finish(one);
        let mut all: Vec<&Run> = four.iter().collect();
        all.push(&one);
        let (from, to) = window(&all);
        let a = share(
            &gpu,
            &four.iter().map(|r| r.pid).collect::<Vec<_>>(),
            from,
            to,
        );
        let b = share(&gpu, &[one.pid], from, to);
        eprintln!("four processes of a: {a:.1}%, one of b: {b:.1}%");
        checks([
            (
                (a - b).abs() <= 3.0,
                format!("equal weights: a {a:.1}% vs b {b:.1}%"),
            ),
            // Plain time-slicing would give a four fifths.
            (a < 60.0, format!("four processes of a got {a:.1}%")),
        ])
    });
}

#[test]
fn spare_time_follows_weights() {
    let _s = serial();
    let prog = spin_loop();
    tslice_tests::measured(|_| {
        let cg = Cgroups::new();
        let broker = Broker::start(&tenants(&cg, "weight = 1", "weight = 3"));
        let gpu = SimGpu::new();
        let (a, b) = (
            start(&gpu, &broker, &cg, "a", &prog, "3"),
            start(&gpu, &broker, &cg, "b", &prog, "3"),
        );
        let (a, b) = (finish(a), finish(b));
        let (from, to) = window(&[&a, &b]);
        let (sa, sb) = (
            share(&gpu, &[a.pid], from, to),
            share(&gpu, &[b.pid], from, to),
        );
        eprintln!("weight 1: {sa:.1}%, weight 3: {sb:.1}%");
        let fa = sa / (sa + sb);
        checks([(
            (fa - 0.25).abs() <= 0.03,
            format!("1:3 split {sa:.1}% / {sb:.1}%"),
        )])
    });
}

/// Shares over a few seconds of the host's clock: measured up to three
/// times ([`tslice_tests::measured`]).
#[test]
fn an_idle_tenants_share_goes_to_a_busy_one_and_comes_back() {
    let _s = serial();
    tslice_tests::measured(|_| idle_share_comes_back());
}

fn idle_share_comes_back() -> Result<(), String> {
    let cg = Cgroups::new();
    let broker = Broker::start(&tenants(&cg, "compute-request = \"50%\"", ""));
    let gpu = SimGpu::new();
    let prog = spin_loop();
    let b = start(&gpu, &broker, &cg, "b", &prog, "4.5");
    // a arrives once b has run a second, and leaves before b does.
    gpu.wait_until_busy(b.id(), 1_000_000_000);
    let a = finish(start(&gpu, &broker, &cg, "a", &prog, "1.6"));
    let b = finish(b);
    let alone_before = share(
        &gpu,
        &[b.pid],
        a.t_start - 800_000_000,
        a.t_start - 100_000_000,
    );
    let together_b = share(
        &gpu,
        &[b.pid],
        a.t_start + 400_000_000,
        a.t_end - 100_000_000,
    );
    let together_a = share(
        &gpu,
        &[a.pid],
        a.t_start + 400_000_000,
        a.t_end - 100_000_000,
    );
    let alone_after = share(&gpu, &[b.pid], a.t_end + 300_000_000, b.t_end - 100_000_000);
    eprintln!("b alone {alone_before:.1}%, with a {together_b:.1}% (a {together_a:.1}%), alone again {alone_after:.1}%");
    checks([
        (
            alone_before > 90.0,
            format!("an idle tenant's share goes to the busy one: {alone_before:.1}%"),
        ),
        (
            together_a >= 47.0,
            format!("a's 50% request is met: {together_a:.1}%"),
        ),
        (
            alone_after > 90.0,
            format!("and comes back when it leaves: {alone_after:.1}%"),
        ),
    ])
}

/// Latencies from each launch until its kernel has run, on the device's
/// record (as in `compute.rs`: the host's delays in waking the victim are
/// not the GPU's).
#[test]
fn a_latency_critical_tenant_keeps_its_solo_latency_beside_a_best_effort_one() {
    let _s = serial();
    let victim = build_cuda(&cuda_src("victim.cu"), &[]);
    let prog = spin_loop();
    tslice_tests::measured(|_| {
        let cg = Cgroups::new();
        let broker = Broker::start(&format!(
            "[[tenant]]\nname = \"serving\"\ncgroup = \"{}\"\nclass = \"latency-critical\"\n\n[[tenant]]\nname = \"batch\"\ncgroup = \"{}\"\nclass = \"best-effort\"\n",
            cg.path("serving"),
            cg.path("batch")
        ));
        let run_victim = |gpu: &SimGpu| {
            let mut c = gpu.command(&victim);
            c.args(["200", "2"])
                .env("LD_PRELOAD", shim())
                .env("TSLICE_BROKER", &broker.socket);
            let out = tslice_tests::run_checked(cg.wrap("serving", c));
            let host = (field(&out, "p50_us"), field(&out, "p99_us"));
            eprintln!("latency-critical p50/p99 us as the victim timed them: {host:?}");
            gpu.latencies_on_device(&out, 200_000)
        };
        let (solo50, solo99) = run_victim(&SimGpu::new());
        let gpu = SimGpu::new();
        let batch = start(&gpu, &broker, &cg, "batch", &prog, "3.5");
        gpu.wait_until_busy(batch.id(), 200_000_000);
        let (with50, with99) = run_victim(&gpu);
        finish(batch);
        eprintln!(
            "latency-critical p50/p99 us on the device: solo {solo50}/{solo99}, beside best-effort {with50}/{with99}"
        );
        checks([(
            with99 <= 1.5 * solo99 + 200.0,
            format!("p99 {with99} us vs solo {solo99} us"),
        )])
    });
}

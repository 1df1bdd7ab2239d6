//! `shares`: achieved vs target share of GPU time (issue 3 §4), with tslice
//! and, side by side, the same tenants under plain time-slicing (no shim).
//!
//! Every tenant saturates the device with 200 us `sim_spin` kernels. A share
//! is device time in a steady-state window (from 0.6 s after the last tenant
//! started its loop to 0.1 s before the first one stopped) over the window's
//! length, measured either
//! - from the simulator's ground truth (`Monitor::busy_between`), with
//!   `tests/cuda/spin_loop.cu` as the tenant (the default), or
//! - by the tenants themselves (`bench/cuda/share_loop.cu`: completed kernels
//!   in the window x kernel duration / window; the kernel does a fixed amount
//!   of work calibrated to 200 us on the idle GPU), which needs no simulator:
//!   `--real-gpu` uses only this; `--self-measure` on the simulator prints
//!   both, which checks the self-measurement against ground truth.

use crate::env::{bench_src, program, Backend, Gpu, Setup};
use crate::report::{field_u64, progress, verdict, Report, Table};
use crate::run::{self, Done};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const KERNEL_US: u64 = 200;
const SETTLE_NS: u64 = 600_000_000;
const TAIL_NS: u64 = 100_000_000;
/// Target: achieved share within this many points of the cap.
const MAX_ERR: f64 = 2.0;

pub struct Params {
    pub seconds: f64,
    /// Also run `share_loop` on the simulator and compare with the Monitor.
    pub self_measure: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seconds: 3.0,
            self_measure: false,
        }
    }
}

const SCENARIOS: [(&str, &[u32]); 3] = [
    ("10% / 90%", &[10, 90]),
    ("30% / 70%", &[30, 70]),
    ("4 x 25%", &[25, 25, 25, 25]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// spin_loop + the simulator's Monitor.
    Monitor,
    /// share_loop, counting its own completed kernels (Monitor too when on
    /// the simulator).
    SelfCount,
}

/// Device-wide time totals, sampled by the benchmark while tenants run.
#[derive(Clone, Copy)]
pub(crate) struct DevSample {
    t: u64,
    busy: u64,
    idle: u64,
    switching: u64,
    switches: u64,
}

/// Where the device's time went in the window (simulator only).
#[derive(Clone, Copy, Default)]
pub(crate) struct DevWindow {
    pub idle_pct: f64,
    pub switching_pct: f64,
    pub switches_per_s: f64,
}

/// Samples the simulated device's totals every 20 ms until `stop`.
pub(crate) fn sampler(
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<DevSample>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut mon = None;
        while !stop.load(Ordering::Relaxed) {
            if mon.is_none() {
                // The first tenant creates the device file.
                mon = simgpu::Monitor::open(&dir, 0).ok();
            }
            if let Some(d) = mon.as_ref().and_then(|m| m.details().ok()) {
                v.push(DevSample {
                    t: d.snapshot.now_ns,
                    busy: d.busy_ns,
                    idle: d.idle_ns,
                    switching: d.switching_ns,
                    switches: d.snapshot.context_switches,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        v
    })
}

/// Device totals at `t`, interpolated between samples.
fn dev_at(v: &[DevSample], t: u64) -> Option<[f64; 4]> {
    let i = v.partition_point(|s| s.t <= t);
    if i == 0 || i == v.len() {
        return None;
    }
    let (a, b) = (v[i - 1], v[i]);
    let f = (t - a.t) as f64 / (b.t - a.t).max(1) as f64;
    let l = |x: u64, y: u64| x as f64 + (y as f64 - x as f64) * f;
    Some([
        l(a.busy, b.busy),
        l(a.idle, b.idle),
        l(a.switching, b.switching),
        l(a.switches, b.switches),
    ])
}

pub(crate) fn dev_window(v: &[DevSample], from: u64, to: u64) -> Option<DevWindow> {
    let (a, b) = (dev_at(v, from)?, dev_at(v, to)?);
    let w = (to - from) as f64;
    Some(DevWindow {
        idle_pct: 100.0 * (b[1] - a[1]) / w,
        switching_pct: 100.0 * (b[2] - a[2]) / w,
        switches_per_s: (b[3] - a[3]) / (w / 1e9),
    })
}

#[derive(Clone, Copy, Default)]
struct Share {
    monitor: Option<f64>,
    self_count: Option<f64>,
    /// GPU time the shim's gate charged the tenant over the whole run (its
    /// own counter, printed by spin_loop) / device time it actually ran
    /// (simulator); 1.0 is exact accounting.
    charged_vs_ran: Option<f64>,
}

/// Runs one set of tenants (with their caps when `enforce`), returns each
/// tenant's share in percent, the window length in seconds, and where the
/// rest of the device's time went (simulator only).
struct Measured {
    shares: Vec<Share>,
    window_s: f64,
    dev: Option<DevWindow>,
}

/// The self-measuring tenant's kernel: iterations for KERNEL_US on an idle
/// GPU, and the duration they measured (ns).
#[derive(Clone, Copy)]
struct Calibration {
    iters: u64,
    kernel_ns: f64,
}

fn calibrate(setup: &Setup) -> Result<Calibration, String> {
    let prog = program(&bench_src("share_loop.cu"));
    let gpu = Gpu::new(setup)?;
    let mut c = gpu.command(&prog);
    c.args(["calibrate", &KERNEL_US.to_string()]);
    let d = run::run(c).map_err(|e| format!("calibrating share_loop: {e}"))?;
    let cal = Calibration {
        iters: field_u64(&d.out, "iters")?,
        kernel_ns: crate::report::field(&d.out, "kernel_ns")?,
    };
    let want = (KERNEL_US * 1000) as f64;
    if (cal.kernel_ns - want).abs() > 0.01 * want {
        return Err(format!(
            "calibration did not reach {KERNEL_US} us (got {:.0} ns with {} iterations)",
            cal.kernel_ns, cal.iters
        ));
    }
    Ok(cal)
}

fn measure(
    setup: &Setup,
    caps: &[u32],
    enforce: bool,
    method: Method,
    cal: Option<Calibration>,
    p: &Params,
) -> Result<Measured, String> {
    let (src, args): (_, Vec<String>) = match (method, cal) {
        (Method::Monitor, _) => (
            tslice_tests::cuda_src("spin_loop.cu"),
            vec![
                "kernels".into(),
                KERNEL_US.to_string(),
                p.seconds.to_string(),
            ],
        ),
        (Method::SelfCount, Some(c)) => (
            bench_src("share_loop.cu"),
            vec![
                KERNEL_US.to_string(),
                p.seconds.to_string(),
                c.iters.to_string(),
            ],
        ),
        (Method::SelfCount, None) => return Err("self-measured shares need a calibration".into()),
    };
    let prog = program(&src);
    let gpu = Gpu::new(setup)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = gpu.dev_dir().map(|d| sampler(d, stop.clone()));
    let mut children = Vec::new();
    for cap in caps {
        let limit = format!("{cap}%");
        let mut cmd = if enforce {
            gpu.command_with_shim(&prog, &[("TSLICE_COMPUTE_LIMIT", &limit)])
        } else {
            gpu.command(&prog)
        };
        cmd.args(&args);
        match run::spawn(cmd) {
            Ok(c) => children.push(c),
            Err(e) => {
                // Collect the ones started (no orphans), then report.
                children.into_iter().for_each(|c| drop(run::finish(c)));
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    // Collect every child before reporting a failure (no orphans).
    let done: Vec<Result<Done, String>> = children.into_iter().map(run::finish).collect();
    stop.store(true, Ordering::Relaxed);
    let samples = sampling.map(|h| h.join().unwrap_or_default());
    let done: Vec<Done> = done.into_iter().collect::<Result<_, _>>()?;
    let from = done.iter().map(|d| d.t_start).max().unwrap_or(0) + SETTLE_NS;
    let to = done
        .iter()
        .map(|d| d.t_end.unwrap_or(0))
        .min()
        .unwrap_or(0)
        .saturating_sub(TAIL_NS);
    if to < from + 500_000_000 {
        return Err(format!(
            "the tenants overlapped too little for a steady-state window ({} ms); \
             starting them took too long: is the machine busy?",
            (to as i64 - from as i64) / 1_000_000
        ));
    }
    let monitor = gpu.monitor()?;
    let mut shares = Vec::new();
    for d in &done {
        let mut s = Share::default();
        if let Some(m) = &monitor {
            let r = m
                .busy_report(d.pid, from, to)
                .map_err(|e| format!("reading the simulated device: {e}"))?;
            if !r.complete {
                return Err(format!(
                    "the simulator's record no longer covers the window (pid {})",
                    d.pid
                ));
            }
            s.monitor = Some(100.0 * r.busy_ns as f64 / (to - from) as f64);
            let ran = m
                .snapshot()
                .processes
                .iter()
                .find(|x| x.pid == d.pid)
                .map(|x| x.busy_ns);
            if let (Some(ran), true) = (ran, d.out.contains("charged_ms=")) {
                s.charged_vs_ran =
                    Some(crate::report::field(&d.out, "charged_ms")? * 1e6 / ran.max(1) as f64);
            }
        }
        if let (Method::SelfCount, Some(c)) = (method, cal) {
            let done_in = completed_at(&d.out, to)? - completed_at(&d.out, from)?;
            s.self_count = Some(100.0 * done_in * c.kernel_ns / (to - from) as f64);
        }
        shares.push(s);
    }
    Ok(Measured {
        shares,
        window_s: (to - from) as f64 / 1e9,
        dev: samples.and_then(|v| dev_window(&v, from, to)),
    })
}

/// Kernels completed by time `t` (interpolated between the tenant's own
/// samples).
fn completed_at(out: &str, t: u64) -> Result<f64, String> {
    let line = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("samples="))
        .ok_or_else(|| format!("no samples= in output:\n{out}"))?;
    let mut pts = Vec::new();
    for s in line.split(',') {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("bad sample {s:?}"))?;
        let a: u64 = a.parse().map_err(|e| format!("bad sample {s:?}: {e}"))?;
        let b: u64 = b.parse().map_err(|e| format!("bad sample {s:?}: {e}"))?;
        pts.push((a, b));
    }
    let i = pts.partition_point(|(ts, _)| *ts <= t);
    if i == 0 || i == pts.len() {
        return Err(format!("time {t} is outside the tenant's samples"));
    }
    let (t0, c0) = pts[i - 1];
    let (t1, c1) = pts[i];
    Ok(c0 as f64 + (c1 as f64 - c0 as f64) * (t - t0) as f64 / (t1 - t0) as f64)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}%"))
}

pub fn run(setup: &Setup, p: &Params, rep: &mut Report) -> Result<(), String> {
    let real = setup.backend == Backend::Real;
    let method = if real || p.self_measure {
        Method::SelfCount
    } else {
        Method::Monitor
    };
    let how = match (real, method) {
        (true, _) => "tenants' own completed-kernel counts (real GPU; no simulator)",
        (false, Method::Monitor) => "the simulator's ground truth (Monitor::busy_between)",
        (false, Method::SelfCount) => {
            "the simulator's ground truth and, beside it, the tenants' own completed-kernel counts"
        }
    };
    rep.line(format!(
        "Every tenant saturates the GPU with {KERNEL_US} us `sim_spin` kernels for {} s; shares over the \
         steady-state window, measured from {how}. Target: |achieved - cap| <= {MAX_ERR} points.",
        p.seconds
    ));
    let cal = if method == Method::SelfCount {
        progress("shares: calibrating the self-measuring tenant's kernel");
        let c = calibrate(setup)?;
        rep.line(format!(
            "Self-measuring tenants (`bench/cuda/share_loop.cu`): a fixed-work kernel of {} iterations, \
             calibrated alone to {:.1} us.",
            c.iters,
            c.kernel_ns / 1e3
        ));
        Some(c)
    } else {
        None
    };
    let mut all_ok = true;
    for (si, (name, caps)) in SCENARIOS.iter().enumerate() {
        progress(format!("shares {name}"));
        // Alternate which run goes first.
        let (ts, pl) = if si % 2 == 0 {
            let a = measure(setup, caps, true, method, cal, p)?;
            (a, measure(setup, caps, false, method, cal, p)?)
        } else {
            let b = measure(setup, caps, false, method, cal, p)?;
            (measure(setup, caps, true, method, cal, p)?, b)
        };
        rep.blank();
        rep.line(format!(
            "**{name}** (windows: tslice {:.2} s, plain {:.2} s)",
            ts.window_s, pl.window_s
        ));
        rep.blank();
        let with_self = method == Method::SelfCount && !real;
        let mut cols = vec!["tenant", ">cap", ">tslice", ">error (pts)", ""];
        if with_self {
            cols.push(">tslice, self-count");
        }
        let with_charge = ts.shares.iter().any(|s| s.charged_vs_ran.is_some());
        if with_charge {
            cols.push(">gate charged / ran");
        }
        cols.push(">plain time-slicing");
        if with_self {
            cols.push(">plain, self-count");
        }
        let mut t = Table::new(&cols);
        let main = |s: &Share| if real { s.self_count } else { s.monitor };
        let (mut sum_t, mut sum_p) = (0.0, 0.0);
        for (i, cap) in caps.iter().enumerate() {
            let a = main(&ts.shares[i]).ok_or("no share measured")?;
            let b = main(&pl.shares[i]).ok_or("no share measured")?;
            sum_t += a;
            sum_p += b;
            let err = a - f64::from(*cap);
            let ok = err.abs() <= MAX_ERR;
            all_ok &= ok;
            let mut row = vec![
                format!("{}", i + 1),
                format!("{cap}%"),
                format!("{a:.2}%"),
                format!("{err:+.2}"),
                verdict(ok),
            ];
            if with_self {
                row.push(pct(ts.shares[i].self_count));
            }
            if with_charge {
                row.push(
                    ts.shares[i]
                        .charged_vs_ran
                        .map_or("-".into(), |x| format!("{x:.3}")),
                );
            }
            row.push(format!("{b:.2}%"));
            if with_self {
                row.push(pct(pl.shares[i].self_count));
            }
            t.row(row);
        }
        let mut row = vec![
            "all".into(),
            format!("{}%", caps.iter().sum::<u32>()),
            format!("{sum_t:.2}%"),
            String::new(),
            String::new(),
        ];
        if with_self {
            row.push(pct(Some(
                ts.shares.iter().filter_map(|s| s.self_count).sum(),
            )));
        }
        if with_charge {
            row.push(String::new());
        }
        row.push(format!("{sum_p:.2}%"));
        if with_self {
            row.push(pct(Some(
                pl.shares.iter().filter_map(|s| s.self_count).sum(),
            )));
        }
        t.row(row);
        rep.table(&t);
        if let (Some(a), Some(b)) = (ts.dev, pl.dev) {
            rep.blank();
            rep.line(format!(
                "Rest of the device's time in the window (simulator): tslice {:.2}% switching ({:.0} context \
                 switches/s), {:.2}% idle; plain time-slicing {:.2}% switching ({:.0}/s), {:.2}% idle.",
                a.switching_pct, a.switches_per_s, a.idle_pct, b.switching_pct, b.switches_per_s, b.idle_pct
            ));
        }
    }
    rep.blank();
    rep.line(format!(
        "Share target (every tenant within {MAX_ERR} points): {}",
        verdict(all_ok)
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_kernels_are_interpolated_between_samples() {
        let out = "pid=1 t_start=1000\nt_end=5000 launches=9 completed_at_end=8 iters=5\n\
                   samples=1000:0,2000:2,3000:6,4000:8\nOK FAILS=0";
        assert_eq!(completed_at(out, 2000).unwrap(), 2.0);
        assert_eq!(completed_at(out, 2500).unwrap(), 4.0);
        assert_eq!(completed_at(out, 3750).unwrap(), 7.5);
        assert!(completed_at(out, 999).is_err());
        assert!(completed_at(out, 4000).is_err());
    }

    #[test]
    fn device_time_in_a_window() {
        let s = |t, busy, idle, switching, switches| DevSample {
            t,
            busy,
            idle,
            switching,
            switches,
        };
        let v = [
            s(0, 0, 0, 0, 0),
            s(1_000_000_000, 900_000_000, 0, 100_000_000, 1000),
        ];
        let w = dev_window(&v, 0, 500_000_000).unwrap();
        assert!((w.switching_pct - 10.0).abs() < 1e-9);
        assert!((w.switches_per_s - 1000.0).abs() < 1e-6);
        assert_eq!(w.idle_pct, 0.0);
    }
}

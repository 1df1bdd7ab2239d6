//! `overhead`: the shim's added cost per `cuLaunchKernel` and per
//! `cuMemAlloc_v2` + `cuMemFree_v2` pair (issue 2 §7, issue 3 §4).
//!
//! `bench/cuda/overhead.cu` times the calls inside the process, through the
//! driver entry points the runtime hands out (the shim's wrappers when it is
//! preloaded). Each round runs every configuration once, in a rotated order,
//! each on a fresh simulated GPU; the table shows medians over the rounds.

use crate::env::{bench_src, program, Gpu, Setup};
use crate::report::{field, median, min_max, progress, verdict, Report, Table};
use crate::run;

pub struct Params {
    pub rounds: usize,
    pub launches: u64,
    pub allocs: u64,
    pub reps: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rounds: 7,
            launches: 100_000,
            allocs: 20_000,
            reps: 3,
        }
    }
}

struct Config {
    name: &'static str,
    shim: bool,
    env: &'static [(&'static str, &'static str)],
    /// Target for added ns per launch (and which issue sets it).
    launch_target: Option<(f64, &'static str)>,
    alloc_target: Option<(f64, &'static str)>,
}

const CONFIGS: [Config; 5] = [
    Config {
        name: "no shim",
        shim: false,
        env: &[],
        launch_target: None,
        alloc_target: None,
    },
    Config {
        name: "shim, no limits",
        shim: true,
        env: &[],
        launch_target: Some((50.0, "issue 2")),
        alloc_target: Some((300.0, "issue 2")),
    },
    Config {
        name: "shim + TSLICE_HBM_LIMIT=1GiB",
        shim: true,
        env: &[("TSLICE_HBM_LIMIT", "1GiB")],
        launch_target: Some((50.0, "issue 2")),
        alloc_target: Some((300.0, "issue 2")),
    },
    Config {
        name: "shim + TSLICE_COMPUTE_LIMIT=99.9% (gate on)",
        shim: true,
        // Paced (a share below the whole device), with a burst of 10 s: the
        // bucket never runs dry, so the gate decides and accounts every
        // launch but never makes one wait.
        env: &[
            ("TSLICE_COMPUTE_LIMIT", "99.9%"),
            ("TSLICE_COMPUTE_BURST", "10s"),
        ],
        launch_target: Some((100.0, "issue 3")),
        alloc_target: Some((300.0, "issue 2")),
    },
    Config {
        name: "shim + TSLICE_COMPUTE_LIMIT=100% (whole GPU)",
        shim: true,
        // The whole device: charged and measured, not paced.
        env: &[("TSLICE_COMPUTE_LIMIT", "100%")],
        launch_target: Some((100.0, "issue 3")),
        alloc_target: Some((300.0, "issue 2")),
    },
];

#[derive(Default)]
struct Samples {
    launch: Vec<f64>,
    alloc: Vec<f64>,
    throttled: u64,
    gate_launches: u64,
    /// What the shim reported (hbm_limited, compute_share_ppm) in the last run.
    shim_line: String,
}

pub fn run(setup: &Setup, p: &Params, rep: &mut Report) -> Result<(), String> {
    let prog = program(&bench_src("overhead.cu"));
    let args = [
        p.launches.to_string(),
        p.allocs.to_string(),
        p.reps.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s: Vec<Samples> = CONFIGS.iter().map(|_| Samples::default()).collect();
    for r in 0..p.rounds {
        progress(format!("overhead round {}/{}", r + 1, p.rounds));
        for k in 0..CONFIGS.len() {
            let i = (k + r) % CONFIGS.len();
            let c = &CONFIGS[i];
            let gpu = Gpu::new(setup)?;
            let mut cmd = if c.shim {
                gpu.command_with_shim(&prog, c.env)
            } else {
                gpu.command(&prog)
            };
            cmd.args(&args);
            let d = run::run(cmd).map_err(|e| format!("overhead, {}: {e}", c.name))?;
            s[i].launch.push(field(&d.out, "launch_ns")?);
            s[i].alloc.push(field(&d.out, "alloc_free_ns")?);
            let loaded = field(&d.out, "shim")? == 1.0;
            if loaded != c.shim {
                return Err(format!(
                    "overhead, {}: the shim is {}loaded, expected the opposite:\n{}",
                    c.name,
                    if loaded { "" } else { "not " },
                    d.out
                ));
            }
            if loaded {
                s[i].throttled += field(&d.out, "throttled")? as u64;
                s[i].gate_launches += field(&d.out, "gate_launches")? as u64;
                s[i].shim_line = d
                    .out
                    .lines()
                    .find(|l| l.starts_with("shim=1"))
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }

    let base_l = median(&s[0].launch);
    let base_a = median(&s[0].alloc);
    rep.line(format!(
        "{} rounds x {} configurations, each on a fresh simulated GPU; per run, the median of {} in-process \
         repetitions of {} launches of `sim_spin(0)` and of {} `cuMemAlloc_v2(2 MiB)`+`cuMemFree_v2` pairs. \
         Table: median over rounds (min..max in brackets); added = median - median(no shim).",
        p.rounds,
        CONFIGS.len(),
        p.reps,
        p.launches,
        p.allocs
    ));
    rep.blank();
    let mut t = Table::new(&[
        "configuration",
        ">ns/launch",
        ">added ns",
        ">ratio",
        "target (added)",
        "",
        ">ns/alloc+free",
        ">added ns",
        ">ratio",
        "target (added)",
        "",
    ]);
    for (c, x) in CONFIGS.iter().zip(&s) {
        let l = median(&x.launch);
        let a = median(&x.alloc);
        let (l0, l1) = min_max(&x.launch);
        let (a0, a1) = min_max(&x.alloc);
        let cell = |m: f64, lo: f64, hi: f64| format!("{m:.1} [{lo:.0}..{hi:.0}]");
        let judge = |added: f64, tgt: Option<(f64, &str)>| match tgt {
            None => ("-".to_string(), String::new()),
            Some((v, who)) => (format!("< {v:.0} ns ({who})"), verdict(added < v)),
        };
        let (lt, lv) = judge(l - base_l, c.launch_target);
        let (at, av) = judge(a - base_a, c.alloc_target);
        let base = !c.shim;
        t.row(vec![
            c.name.to_string(),
            cell(l, l0, l1),
            if base {
                "-".into()
            } else {
                format!("{:+.1}", l - base_l)
            },
            if base {
                "-".into()
            } else {
                format!("{:.3}", l / base_l)
            },
            lt,
            lv,
            cell(a, a0, a1),
            if base {
                "-".into()
            } else {
                format!("{:+.1}", a - base_a)
            },
            if base {
                "-".into()
            } else {
                format!("{:.3}", a / base_a)
            },
            at,
            av,
        ]);
    }
    rep.table(&t);
    rep.blank();
    for (c, x) in CONFIGS.iter().zip(&s) {
        if c.shim {
            rep.line(format!(
                "- {}: shim counters over the timed launches of all rounds: {} launches through the gate, \
                 {} throttled (last run: `{}`)",
                c.name, x.gate_launches, x.throttled, x.shim_line
            ));
        }
    }
    Ok(())
}

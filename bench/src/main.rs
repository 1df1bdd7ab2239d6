//! `tslice-bench`: tslice's benchmarks, as ratios measured side by side in
//! one run (shim vs no shim, tslice vs plain time-slicing), never timed
//! assertions. See `bench/README.md`.
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p tslice-bench -- all
//! ```

mod broker;
mod env;
mod noncuda;
mod overhead;
mod report;
mod run;
mod shares;
mod victim;

use env::{Backend, Setup};
use report::Report;
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: tslice-bench [OPTIONS] all|overhead|shares|victim|noncuda|broker

  overhead   ns added by the shim per cuLaunchKernel and per cuMemAlloc_v2+cuMemFree_v2
  shares     achieved vs target GPU-time share (10/90, 30/70, 4 x 25%), tslice vs plain time-slicing
  victim     a latency-sensitive tenant's p50/p99: solo, beside an unenforced and a capped neighbour
  noncuda    cost of the preloaded shim in processes that never use CUDA
  broker     the node broker: allocation latency, shares and switching with coordinated turns,
             a latency-critical tenant's p99, 64 processes starting, reaction time, policy cost
             (simulated GPU, root: tenants are cgroups)
  all        everything above, one part at a time

options:
  --real-gpu         run on the machine's CUDA driver instead of the simulated GPU; shares are
                     then measured by the tenants themselves (completed kernels x duration / time)
  --self-measure     shares on the simulator with the self-measuring tenants, printed beside the
                     simulator's ground truth (checks the --real-gpu method)
  --rounds N         overhead: interleaved rounds (default 7)
  --seconds S        shares: seconds per tenant run (default 3)
  --iterations N     noncuda: runs per program and configuration (default 60)
  --out FILE         also write the report to FILE
  -h, --help         this text

Needs `cargo build --release --workspace` and the CUDA toolkit (scripts/setup-cuda-toolkit.sh).";

struct Args {
    cmd: String,
    real_gpu: bool,
    out: Option<String>,
    overhead: overhead::Params,
    shares: shares::Params,
    victim: victim::Params,
    noncuda: noncuda::Params,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        cmd: String::new(),
        real_gpu: false,
        out: None,
        overhead: Default::default(),
        shares: Default::default(),
        victim: Default::default(),
        noncuda: Default::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match x.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--real-gpu" => a.real_gpu = true,
            "--self-measure" => a.shares.self_measure = true,
            "--rounds" => {
                a.overhead.rounds = val("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?;
                if a.overhead.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--seconds" => {
                a.shares.seconds = val("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
                if a.shares.seconds.is_nan() || a.shares.seconds < 1.5 {
                    return Err(
                        "--seconds must be at least 1.5 (0.6 s settling + 0.1 s tail + a window)"
                            .into(),
                    );
                }
            }
            "--iterations" => {
                a.noncuda.iterations = val("--iterations")?
                    .parse()
                    .map_err(|e| format!("--iterations: {e}"))?;
                if a.noncuda.iterations < 2 {
                    return Err("--iterations must be at least 2".into());
                }
            }
            "--out" => a.out = Some(val("--out")?),
            "all" | "overhead" | "shares" | "victim" | "noncuda" | "broker" if a.cmd.is_empty() => {
                a.cmd = x
            }
            _ => return Err(format!("unexpected argument {x:?}")),
        }
    }
    if a.cmd.is_empty() {
        return Err("no benchmark named".into());
    }
    if a.real_gpu && a.shares.self_measure {
        return Err("--self-measure is for the simulator (--real-gpu always self-measures)".into());
    }
    Ok(a)
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn proc_line(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
    })
}

fn header(a: &Args, setup: &Setup, rep: &mut Report) {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let argv = argv.join(" ");
    rep.line(format!("# tslice benchmarks: {}", a.cmd));
    rep.blank();
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
    rep.line(format!("- date: {date}"));
    let cmd = if std::env::var_os("CARGO").is_some() {
        format!("cargo run --release -p tslice-bench -- {argv}")
    } else {
        format!(
            "{} {argv}",
            std::env::current_exe().map_or("tslice-bench".into(), |p| p.display().to_string())
        )
    };
    rep.line(format!("- command: `{cmd}`"));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = proc_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = proc_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    rep.line(format!(
        "- machine: `nproc` = {nproc}, `uname -r` = {}, {cpu}, {mem} memory",
        kernel.trim()
    ));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    rep.line(format!(
        "- load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let root = tslice_tests::repo_root();
    let root = root.to_string_lossy();
    if let Some(rev) = sh("git", &["-C", &root, "rev-parse", "--short", "HEAD"]) {
        let dirty = sh(
            "git",
            &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
        )
        .is_some_and(|s| !s.is_empty());
        rep.line(format!(
            "- source: commit {rev}{}",
            if dirty {
                " with uncommitted changes"
            } else {
                ""
            }
        ));
    }
    let gpu = match setup.backend {
        Backend::Sim => "the simulated GPU (simcuda over simgpu; default timeslice 1024 us, switch cost 90 us), \
                         a fresh device per measurement"
            .to_string(),
        Backend::Real => sh("nvidia-smi", &["--query-gpu=name,driver_version", "--format=csv,noheader"])
            .map_or("the real GPU (nvidia-smi not found)".into(), |s| format!("real GPU: {s}")),
    };
    rep.line(format!("- GPU: {gpu}"));
    rep.line(format!(
        "- libraries: {} (release build{})",
        setup.release.display(),
        if cfg!(debug_assertions) {
            "; this harness itself is a debug build: use `cargo run --release`"
        } else {
            ""
        }
    ));
    rep.line("- CUDA runtime: the pinned toolkit from `.cuda/env` (CUDA 13)");
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tslice-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let backend = if a.real_gpu {
        Backend::Real
    } else {
        Backend::Sim
    };
    let cuda = a.cmd != "noncuda";
    let setup = match Setup::check(backend, cuda) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tslice-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rep = Report::default();
    header(&a, &setup, &mut rep);
    let parts: Vec<&str> = if a.cmd == "all" {
        vec!["overhead", "shares", "victim", "noncuda", "broker"]
    } else {
        vec![a.cmd.as_str()]
    };
    let mut failed = false;
    for part in &parts {
        rep.blank();
        let title = match *part {
            "overhead" => "## overhead: added cost per launch and per alloc/free pair",
            "shares" => "## shares: achieved vs target share of GPU time",
            "victim" => "## victim: latency beside a saturating neighbour",
            "broker" => "## broker: the node broker beside running without it",
            _ => "## noncuda: the shim in processes that never use CUDA",
        };
        rep.line(title);
        rep.blank();
        let r = match *part {
            "overhead" => overhead::run(&setup, &a.overhead, &mut rep),
            "shares" => shares::run(&setup, &a.shares, &mut rep),
            "victim" => victim::run(&setup, &a.victim, &mut rep),
            "broker" => {
                if backend == Backend::Real {
                    Err("the broker benchmark runs on the simulated GPU (drop --real-gpu)".into())
                } else {
                    broker::run(
                        &setup,
                        &broker::Params {
                            seconds: a.shares.seconds,
                        },
                        &mut rep,
                    )
                }
            }
            _ => noncuda::run(&setup, &a.noncuda, &mut rep),
        };
        if let Err(e) = r {
            rep.line(format!("**ERROR**: {e}"));
            failed = true;
        }
    }
    if let Some(path) = &a.out {
        if let Err(e) = std::fs::write(path, rep.text()) {
            eprintln!("tslice-bench: writing {path}: {e}");
            return ExitCode::from(1);
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

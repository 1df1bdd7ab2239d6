//! `simgpu`: reads the shared state of simulated GPUs.
//!
//! ```text
//! simgpu status [--dir D] [--device N]
//! simgpu busy --pid P --from NS --to NS [--dir D] [--device N]
//! ```
//!
//! Output is JSON on stdout; errors go to stderr with exit status 1 (2 for
//! usage errors). `--dir` defaults to `SIMCUDA_DIR` or
//! `/dev/shm/simcuda-<uid>`; `--device` to 0. Times are `CLOCK_MONOTONIC`
//! nanoseconds, as in the device.

use std::path::PathBuf;
use std::process::ExitCode;

use simgpu::{format_uuid, Config, Monitor};

const USAGE: &str = "usage:
  simgpu status [--dir D] [--device N]
  simgpu busy --pid P --from NS --to NS [--dir D] [--device N]";

struct Args {
    cmd: String,
    dir: Option<PathBuf>,
    device: u32,
    pid: Option<u32>,
    from: Option<u64>,
    to: Option<u64>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let cmd = it.next().ok_or("missing command")?.clone();
    let mut a = Args {
        cmd,
        dir: None,
        device: 0,
        pid: None,
        from: None,
        to: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: &String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v:?}: not a whole number"))
        };
        match flag.as_str() {
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--device" => {
                let v = value()?;
                a.device =
                    u32::try_from(num(v)?).map_err(|_| format!("--device {v:?}: too large"))?;
            }
            "--pid" => {
                let v = value()?;
                a.pid =
                    Some(u32::try_from(num(v)?).map_err(|_| format!("--pid {v:?}: too large"))?);
            }
            "--from" => a.from = Some(num(value()?)?),
            "--to" => a.to = Some(num(value()?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn status(m: &Monitor) -> Result<String, String> {
    let d = m.details().map_err(|e| e.to_string())?;
    let s = &d.snapshot;
    let procs: Vec<String> = s
        .processes
        .iter()
        .map(|p| {
            format!(
                "{{\"pid\":{},\"alive\":{},\"mem_used\":{},\"mem_peak\":{},\"busy_ns\":{},\"items_completed\":{}}}",
                p.pid, p.alive, p.mem_used, p.mem_peak, p.busy_ns, p.items_completed
            )
        })
        .collect();
    let ctxs: Vec<String> = d
        .contexts
        .iter()
        .map(|c| {
            format!(
                "{{\"index\":{},\"pid\":{},\"state\":{},\"submitted\":{},\"completed\":{},\"pending\":{},\"busy_ns\":{}}}",
                c.index,
                c.pid,
                js(c.state),
                c.submitted,
                c.completed,
                c.pending,
                c.busy_ns
            )
        })
        .collect();
    let resident = d.resident.map_or("null".to_string(), |r| r.to_string());
    Ok(format!(
        "{{\"device\":{},\"uuid\":{},\"path\":{},\"now_ns\":{},\"mem_total\":{},\"mem_used\":{},\"mem_peak\":{},\
         \"timeslice_ns\":{},\"switch_ns\":{},\"queue_depth\":{},\"context_switches\":{},\"busy_ns\":{},\
         \"idle_ns\":{},\"switching_ns\":{},\"resident\":{},\"retained_from_ns\":{},\
         \"processes\":[{}],\"contexts\":[{}]}}",
        m.ordinal(),
        js(&format_uuid(&m.uuid())),
        js(&m.path().display().to_string()),
        s.now_ns,
        s.mem_total,
        s.mem_used,
        s.mem_peak,
        d.timeslice_ns,
        d.switch_ns,
        d.queue_depth,
        s.context_switches,
        d.busy_ns,
        d.idle_ns,
        d.switching_ns,
        resident,
        d.retained_from_ns,
        procs.join(","),
        ctxs.join(",")
    ))
}

fn run(argv: &[String]) -> Result<String, (u8, String)> {
    let a = parse(argv).map_err(|e| (2, format!("{e}\n{USAGE}")))?;
    let usage = |e: &str| (2u8, format!("{e}\n{USAGE}"));
    if a.cmd != "status" && a.cmd != "busy" {
        return Err(usage(&format!("unknown command {:?}", a.cmd)));
    }
    let window = match (a.cmd.as_str(), a.pid, a.from, a.to) {
        ("busy", Some(pid), Some(from), Some(to)) if to >= from => Some((pid, from, to)),
        ("busy", Some(_), Some(_), Some(_)) => return Err(usage("--to is before --from")),
        ("busy", ..) => return Err(usage("busy needs --pid, --from and --to")),
        _ => None,
    };
    let dir = match a.dir {
        Some(d) => d,
        None => Config::dir_from_env().map_err(|e| (1, e))?,
    };
    let m = Monitor::open(&dir, a.device).map_err(|e| (1, e.to_string()))?;
    let Some((pid, from, to)) = window else {
        return status(&m).map_err(|e| (1, e));
    };
    let r = m
        .busy_report(pid, from, to)
        .map_err(|e| (1, e.to_string()))?;
    Ok(format!(
        "{{\"device\":{},\"pid\":{pid},\"from_ns\":{from},\"to_ns\":{to},\"busy_ns\":{},\"complete\":{},\"retained_from_ns\":{}}}",
        m.ordinal(),
        r.busy_ns,
        r.complete,
        r.retained_from_ns
    ))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(_) => {}
    }
    match run(&argv) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            eprintln!("simgpu: {msg}");
            ExitCode::from(code)
        }
    }
}

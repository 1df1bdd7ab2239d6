//! `tslice`: the command line of a tslice node.
//!
//! * `tslice status [--json]`: tenants, processes, devices, memory used /
//!   limit / high-water mark, share target vs achieved, throttle wait;
//! * `tslice top`: the same, refreshed;
//! * `tslice run [--memory 8GiB] [--compute 30%] -- CMD...`: runs CMD with
//!   the shim preloaded (the one-line way to use tslice off Kubernetes).

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tslice_broker::config::DEFAULT_SOCKET;
use tslice_proto::{FrameBuf, Msg};

#[derive(Parser)]
#[command(
    version,
    about = "The tslice node: status, top, and running programs under tslice"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The node's tenants, processes and devices.
    Status {
        /// The broker's socket (default: $TSLICE_BROKER, else /run/tslice/broker.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the broker's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// The status, refreshed until interrupted.
    Top {
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Refresh this many times, then exit (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Runs a program with the tslice shim preloaded. Its limits come from
    /// the broker when one runs; --memory and --compute can only lower them
    /// (or set them, without a broker).
    Run {
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Device memory cap for the program (8GiB, 25%).
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
        /// Share of GPU time for the program (30%).
        #[arg(long, value_name = "SHARE")]
        compute: Option<String>,
        /// The shim (default: $TSLICE_LIB, else libtslice.so next to this
        /// program or in ../lib).
        #[arg(long, value_name = "PATH")]
        lib: Option<PathBuf>,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
}

fn socket_path(s: Option<PathBuf>) -> PathBuf {
    s.or_else(|| std::env::var_os("TSLICE_BROKER").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Asks the broker for its status.
fn fetch(socket: &Path) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the broker at {}: {e} (is tslice-broker running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(&Msg::StatusRequest.encode())
        .map_err(|e| format!("writing to the broker: {e}"))?;
    let mut fb = FrameBuf::new();
    let mut json = String::new();
    let mut buf = [0u8; 16384];
    loop {
        match fb
            .next_msg()
            .map_err(|e| format!("the broker sent a bad frame: {e}"))?
        {
            Some(Msg::Status { json: part }) if part.is_empty() => break,
            Some(Msg::Status { json: part }) => json.push_str(&part),
            Some(Msg::Refused { reason }) => return Err(format!("the broker refused: {reason}")),
            Some(other) => return Err(format!("the broker sent an unexpected {other:?}")),
            None => {
                let n = s
                    .read(&mut buf)
                    .map_err(|e| format!("reading from the broker: {e}"))?;
                if n == 0 {
                    return Err("the broker closed the connection".into());
                }
                fb.push(&buf[..n]);
            }
        }
    }
    serde_json::from_str(&json).map_err(|e| format!("the broker's status is not JSON: {e}"))
}

fn bytes(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(b) if b >= (1u64 << 30) as f64 => format!("{:.1}GiB", b / (1u64 << 30) as f64),
        Some(b) => format!("{:.0}MiB", b / (1u64 << 20) as f64),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// The status as a table a terminal shows at a glance.
fn table(st: &Value) -> String {
    let mut out = String::new();
    let ndev = st["devices"].as_array().map_or(0, |d| d.len());
    let ntenants = st["tenants"].as_array().map_or(0, |t| t.len());
    out.push_str(&format!(
        "tslice: {} tenants, {} devices, broker up {:.0}s\n",
        ntenants,
        ndev,
        st["uptime_s"].as_f64().unwrap_or(0.0)
    ));
    out.push_str(&format!(
        "{:<24} {:<16} {:>5}  {:<13} {:>9} {:>9} {:>9}  {:>7} {:>8}  {:>8}\n",
        "TENANT",
        "CLASS",
        "PROCS",
        "DEVICE",
        "MEM USED",
        "LIMIT",
        "HIGH",
        "SHARE",
        "ACHIEVED",
        "WAITED"
    ));
    for t in st["tenants"].as_array().into_iter().flatten() {
        let procs = t["processes"].as_array().map_or(0, |p| p.len());
        let devs = t["devices"].as_array().cloned().unwrap_or_default();
        let name: String = t["name"].as_str().unwrap_or("?").chars().take(24).collect();
        if devs.is_empty() {
            out.push_str(&format!(
                "{:<24} {:<16} {:>5}\n",
                name,
                t["class"].as_str().unwrap_or(""),
                procs
            ));
        }
        for (i, d) in devs.iter().enumerate() {
            let uuid: String = d["uuid"].as_str().unwrap_or("?").chars().take(13).collect();
            out.push_str(&format!(
                "{:<24} {:<16} {:>5}  {:<13} {:>9} {:>9} {:>9}  {:>7} {:>8}  {:>7.1}s\n",
                if i == 0 { name.as_str() } else { "" },
                if i == 0 {
                    t["class"].as_str().unwrap_or("")
                } else {
                    ""
                },
                if i == 0 {
                    procs.to_string()
                } else {
                    String::new()
                },
                uuid,
                bytes(&d["memory_used"]),
                bytes(&d["memory_limit"]),
                bytes(&d["memory_high_water"]),
                pct(&d["share_target"]),
                pct(&d["share_achieved"]),
                d["throttle_wait_s"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    out
}

/// Where the shim is, for `run`.
fn find_lib(lib: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(l) = lib.or_else(|| std::env::var_os("TSLICE_LIB").map(PathBuf::from)) {
        return if l.exists() {
            Ok(l)
        } else {
            Err(format!("{} does not exist", l.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("libtslice.so"),
        dir.join("../lib/libtslice.so"),
        dir.join("../lib/tslice/libtslice.so"),
        PathBuf::from("/usr/local/lib/tslice/libtslice.so"),
        PathBuf::from("/usr/lib/tslice/libtslice.so"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            format!(
                "libtslice.so not found (looked in {}); give --lib or TSLICE_LIB",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn run(
    socket: Option<PathBuf>,
    memory: Option<String>,
    compute: Option<String>,
    lib: Option<PathBuf>,
    cmd: Vec<String>,
) -> ExitCode {
    if let Some(m) = &memory {
        if let Err(e) = tslice_policy::quota::parse_mem_limits("--memory", m) {
            eprintln!("tslice run: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(c) = &compute {
        if let Err(e) = tslice_policy::quota::parse_compute_limits("--compute", c) {
            eprintln!("tslice run: {e}");
            return ExitCode::from(2);
        }
    }
    let lib = match find_lib(lib) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tslice run: {e}");
            return ExitCode::from(2);
        }
    };
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.trim().is_empty() => format!("{}:{p}", lib.display()),
        _ => lib.display().to_string(),
    };
    c.env("LD_PRELOAD", preload);
    if let Some(m) = memory {
        c.env("TSLICE_HBM_LIMIT", m);
    }
    if let Some(x) = compute {
        c.env("TSLICE_COMPUTE_LIMIT", x);
    }
    if let Some(s) = socket {
        c.env("TSLICE_BROKER", s);
    }
    let e = c.exec();
    eprintln!("tslice run: cannot run {:?}: {e}", cmd[0]);
    ExitCode::from(127)
}

fn main() -> ExitCode {
    match Args::parse().cmd {
        Cmd::Status { socket, json } => match fetch(&socket_path(socket)) {
            Ok(st) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
                } else {
                    print!("{}", table(&st));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tslice status: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Top {
            socket,
            interval,
            count,
        } => {
            let socket = socket_path(socket);
            let mut n = 0;
            loop {
                match fetch(&socket) {
                    Ok(st) => print!("\x1b[H\x1b[2J{}", table(&st)),
                    Err(e) => println!("\x1b[H\x1b[2Jtslice top: {e}"),
                }
                let _ = std::io::stdout().flush();
                n += 1;
                if count > 0 && n >= count {
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(Duration::from_secs_f64(interval.clamp(0.1, 3600.0)));
            }
        }
        Cmd::Run {
            socket,
            memory,
            compute,
            lib,
            cmd,
        } => run(socket, memory, compute, lib, cmd),
    }
}

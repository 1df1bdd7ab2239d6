//! `tslice-broker`: the node daemon (foreground; logs to stderr).

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tslice_broker::config::{Config, DEFAULT_CONFIG};
use tslice_broker::server;

/// The tslice node broker: per-tenant memory ledgers and GPU-time shares
/// for every CUDA process on the node, enforced by the shims.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file (TOML). When the default file does not exist,
    /// the broker runs with built-in defaults (no limits).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Log filter (error, warn, info, debug, or tracing directives);
    /// RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// Only check the configuration file: print what is wrong (or nothing)
    /// and exit (0: usable, 2: not).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match Config::load(&args.config).and_then(|c| usable(&c, &args.config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tslice-broker: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Err(e) = tslice_broker::logs::init("tslice-broker", &args.log) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    raise_nofile();
    let explicit = args.config != Path::new(DEFAULT_CONFIG);
    let (config, path) = if !explicit && !args.config.exists() {
        tracing::warn!(
            "{DEFAULT_CONFIG} does not exist: running with the built-in defaults (no limits)"
        );
        (Config::default(), None)
    } else {
        match Config::load(&args.config).and_then(|c| usable(&c, &args.config).map(|()| c)) {
            Ok(c) => (c, Some(args.config.clone())),
            Err(e) => {
                eprintln!("tslice-broker: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tslice-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let socket = config.socket.clone();
        let (listener, replaced) = match server::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tslice-broker: cannot listen on {}: {e}", socket.display());
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(socket = %socket.display(), tenants = config.tenants.len(), "tslice-broker serving");
        let broker = server::Broker::new(config, path);
        if replaced {
            tracing::info!(
                "a previous broker's socket was there: reservations wait {:?} for its processes to reconnect",
                server::RECOVERY
            );
            broker.recovering();
        }
        let term = async {
            let mut t = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match t.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let b = broker.clone();
        tokio::select! {
            r = server::serve(broker, listener) => {
                if let Err(e) = r {
                    eprintln!("tslice-broker: {e}");
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            _ = term => {
                // Processes that are connected reconnect to the next broker,
                // which finds the socket and waits for them (RECOVERY); with
                // nobody connected the socket goes, so that the next start
                // grants at once.
                if b.has_processes() {
                    tracing::info!("stopping; the socket stays for the connected processes to find the next broker");
                } else {
                    tracing::info!("stopping");
                    let _ = std::fs::remove_file(&socket);
                }
                ExitCode::SUCCESS
            }
        }
    })
}

/// What a broker needs beyond a valid file: on Kubernetes, its node's name.
fn usable(c: &Config, path: &Path) -> Result<(), tslice_broker::config::ConfigError> {
    match &c.kubernetes {
        Some(k) => k.node(&path.display().to_string()).map(|_| ()),
        None => Ok(()),
    }
}

/// Every connected process holds a few descriptors of the broker's: the
/// soft limit is raised to the hard one (as servers do), so a node's
/// processes do not run the broker out of them.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the descriptor limit from {soft} to {hard}: {e}");
            }
        }
    }
}

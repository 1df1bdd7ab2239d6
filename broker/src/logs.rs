//! Logging of tslice's daemons (the broker, the webhook): `tracing` to
//! stderr, the level from `--log` unless `RUST_LOG` says otherwise, colours
//! only on a terminal.

use std::io::IsTerminal;

/// Sets up logging; an invalid `--log` value is the error, in one line
/// naming it and what is accepted.
pub fn init(program: &str, log: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(log))
        .map_err(|e| {
            format!("{program}: --log {log:?} is invalid: {e}; accepted: error, warn, info, debug")
        })?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    Ok(())
}

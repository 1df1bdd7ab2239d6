//! One-line diagnostics on stderr, prefixed `tslice[pid]:`. Level from
//! `TSLICE_LOG` (`off`, `error`, `warn` (default), `info`, `debug`), read when
//! the shim first initialises. Writes go straight to fd 2 with `write(2)`.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

pub const ERROR: u8 = 1;
pub const WARN: u8 = 2;
pub const INFO: u8 = 3;
pub const DEBUG: u8 = 4;

static LEVEL: AtomicU8 = AtomicU8::new(WARN);

#[inline]
pub fn enabled(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

/// Applies `TSLICE_LOG`. An invalid value is reported and the default kept.
pub fn init_from_env() {
    let Some(v) = std::env::var_os("TSLICE_LOG") else { return };
    let level = match v.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "off" | "none" | "0" => 0,
        "error" => ERROR,
        "warn" | "warning" => WARN,
        "info" => INFO,
        "debug" | "trace" => DEBUG,
        _ => {
            emit(WARN, format_args!(
                "TSLICE_LOG={:?} is invalid; accepted: off, error, warn, info, debug; using warn",
                v.to_string_lossy()
            ));
            WARN
        }
    };
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn emit(level: u8, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let name = match level {
        ERROR => "error",
        WARN => "warning",
        INFO => "info",
        _ => "debug",
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let line = format!("tslice[{pid}]: {name}: {args}\n");
    let mut buf = line.as_bytes();
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid slice; fd 2 may be closed, which write reports.
        let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        buf = &buf[n as usize..];
    }
}

macro_rules! error { ($($a:tt)*) => { $crate::log::emit($crate::log::ERROR, format_args!($($a)*)) } }
macro_rules! warning { ($($a:tt)*) => { $crate::log::emit($crate::log::WARN, format_args!($($a)*)) } }
macro_rules! info { ($($a:tt)*) => { $crate::log::emit($crate::log::INFO, format_args!($($a)*)) } }
macro_rules! debug { ($($a:tt)*) => { if $crate::log::enabled($crate::log::DEBUG) { $crate::log::emit($crate::log::DEBUG, format_args!($($a)*)) } } }
pub(crate) use {debug, error, info, warning as warn};

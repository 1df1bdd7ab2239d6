//! One-line diagnostics on stderr, prefixed `tslice[pid]:`. Level from
//! `TSLICE_LOG` (`off`, `error`, `warn` (default), `info`, `debug`), read when
//! the shim first initialises. Writes go straight to fd 2 with `write(2)`.
//!
//! Two rules keep the shim from drowning its tenant's stderr or hiding why it
//! refuses to work:
//! * every call site prints its first [`BURST`] lines, then only the 10th,
//!   100th, 1000th... occurrence, with the count (a tenant that retries a bad
//!   call a million times gets a handful of lines, not a million);
//! * [`always!`] lines (why CUDA calls fail closed) are printed whatever the
//!   level, `off` included, and are not rate-limited: they are the only
//!   explanation the tenant gets.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

pub const ALWAYS: u8 = 0;
pub const ERROR: u8 = 1;
pub const WARN: u8 = 2;
pub const INFO: u8 = 3;
pub const DEBUG: u8 = 4;

/// Lines each call site prints before it is rate-limited.
pub const BURST: u64 = 5;

static LEVEL: AtomicU8 = AtomicU8::new(WARN);

#[inline]
pub fn enabled(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

/// Applies `TSLICE_LOG`. An invalid value is reported and the default kept.
pub fn init_from_env() {
    let Some(v) = std::env::var_os("TSLICE_LOG") else {
        return;
    };
    let level = match v.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "off" | "none" | "0" => ALWAYS,
        "error" => ERROR,
        "warn" | "warning" => WARN,
        "info" => INFO,
        "debug" | "trace" => DEBUG,
        _ => {
            emit(
                WARN,
                format_args!(
                    "TSLICE_LOG={} is invalid; accepted: off, error, warn, info, debug; using warn",
                    tslice_policy::quota::clip(&v.to_string_lossy())
                ),
            );
            WARN
        }
    };
    LEVEL.store(level, Ordering::Relaxed);
}

/// Whether the `n`th occurrence (from 1) of a call site's line is printed:
/// the first [`BURST`], then powers of ten.
pub fn should_print(n: u64) -> bool {
    if n <= BURST {
        return true;
    }
    let mut p = 10;
    while p < n {
        p = match p.checked_mul(10) {
            Some(q) => q,
            None => return false,
        };
    }
    p == n
}

/// Prints a line of a call site whose occurrences `count` counts.
pub fn emit_counted(level: u8, count: &AtomicU64, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    if !should_print(n) {
        return;
    }
    if n > BURST {
        emit(
            level,
            format_args!("{args} (seen {n} times; repeats are shown at powers of ten)"),
        );
    } else {
        emit(level, args);
    }
}

pub fn emit(level: u8, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let name = match level {
        ALWAYS | ERROR => "error",
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

/// A rate-limited line at `level`, counted per call site.
macro_rules! at_level {
    ($level:expr, $($a:tt)*) => {{
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        $crate::log::emit_counted($level, &COUNT, format_args!($($a)*))
    }};
}
// Not rate-limited: each says why CUDA calls fail, and there are few.
macro_rules! always { ($($a:tt)*) => { $crate::log::emit($crate::log::ALWAYS, format_args!($($a)*)) } }
macro_rules! error { ($($a:tt)*) => { $crate::log::at_level!($crate::log::ERROR, $($a)*) } }
macro_rules! warning { ($($a:tt)*) => { $crate::log::at_level!($crate::log::WARN, $($a)*) } }
macro_rules! info { ($($a:tt)*) => { $crate::log::at_level!($crate::log::INFO, $($a)*) } }
macro_rules! debug { ($($a:tt)*) => { if $crate::log::enabled($crate::log::DEBUG) { $crate::log::emit($crate::log::DEBUG, format_args!($($a)*)) } } }
pub(crate) use {always, at_level, debug, error, info, warning as warn};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_powers_of_ten() {
        let printed: Vec<u64> = (1..=100_000).filter(|&n| should_print(n)).collect();
        assert_eq!(printed, vec![1, 2, 3, 4, 5, 10, 100, 1000, 10_000, 100_000]);
        assert!(!should_print(u64::MAX));
    }
}

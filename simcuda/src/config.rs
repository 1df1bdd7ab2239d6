//! The driver's own environment settings (`SIMCUDA_*`; simgpu reads its own).
//! Read once per process and cached in atomics, so reading them after `fork`
//! takes no lock.

use std::sync::atomic::{AtomicI64, Ordering};

const UNSET: i64 = i64::MIN;
static LOG: AtomicI64 = AtomicI64::new(UNSET);
static DRIVER_VERSION: AtomicI64 = AtomicI64::new(UNSET);
static KERNEL_NS: AtomicI64 = AtomicI64::new(UNSET);

fn cached(slot: &AtomicI64, load: impl FnOnce() -> i64) -> i64 {
    let v = slot.load(Ordering::Relaxed);
    if v != UNSET {
        return v;
    }
    let v = load();
    slot.store(v, Ordering::Relaxed);
    v
}

fn env_i64(name: &str) -> Option<i64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            log(format_args!("ignoring {name}={v:?}: expected an integer"));
            None
        }
    }
}

/// `SIMCUDA_LOG=1` (any non-zero integer) traces calls to stderr.
pub fn log_enabled() -> bool {
    cached(&LOG, || match std::env::var("SIMCUDA_LOG") {
        Ok(v) => i64::from(!matches!(v.trim(), "" | "0")),
        Err(_) => 0,
    }) != 0
}

/// One line to stderr, prefixed with the pid.
pub fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("[simcuda {}] {args}", std::process::id());
}

/// `SIMCUDA_DRIVER_VERSION`, default 13050 (CUDA 13.5).
pub fn driver_version() -> i32 {
    cached(&DRIVER_VERSION, || {
        env_i64("SIMCUDA_DRIVER_VERSION")
            .filter(|v| *v > 0 && *v < i64::from(i32::MAX))
            .unwrap_or(13050)
    }) as i32
}

/// Duration of a kernel other than `sim_spin`: `SIMCUDA_KERNEL_US`, default 10 us.
pub fn default_kernel_ns() -> u64 {
    cached(&KERNEL_NS, || {
        env_i64("SIMCUDA_KERNEL_US")
            .filter(|v| *v >= 0)
            .unwrap_or(10)
            .saturating_mul(1000)
    }) as u64
}

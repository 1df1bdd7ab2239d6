//! The pages the broker and a shim share (each `mmap`ed from a memfd whose
//! descriptor travels with the handshake). Only atomics, so either side can
//! read while the other writes; fixed layout (`#[repr(C)]`), checked by
//! magic and version.
//!
//! * [`BudgetPage`]: written by the broker, mapped **read-only** by the shim
//!   (its descriptor is opened read-only and the memfd is sealed against
//!   new writable mappings): the process's compute share and
//!   its tenant's memory limit and reservations, per device. The shim reads
//!   it with atomic loads on its launch path: no round trip.
//! * [`ProcessPage`]: written by the shim (a memfd sealed against shrinking
//!   and growing, which the broker checks), mapped read-only by the broker:
//!   the process's counters per device (launches, which tell the broker who
//!   has work; GPU time charged; memory). The broker treats it as a claim
//!   of the process about itself, never as authority over anyone else.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::MAX_DEVICES;

pub const BUDGET_MAGIC: u32 = 0x7451_4247; // "tQBG"
pub const PROCESS_MAGIC: u32 = 0x7451_5052; // "tQPR"
pub const PAGE_VERSION: u32 = 1;

/// One device of a [`BudgetPage`].
#[repr(C)]
#[derive(Debug, Default)]
pub struct BudgetDev {
    /// This process's share of the device's time, ppm (1_000_000: no
    /// limit, the gate stands aside).
    pub share_ppm: AtomicU32,
    /// [`CLASS_LATENCY_CRITICAL`], [`CLASS_STANDARD`], [`CLASS_BEST_EFFORT`].
    pub class: AtomicU32,
    /// Launches wait until this `CLOCK_MONOTONIC` time (0: no hold): the
    /// broker's turns and latency-critical preemption.
    pub hold_until_ns: AtomicU64,
    /// The tenant's memory limit on the device (u64::MAX: none).
    pub mem_limit: AtomicU64,
    /// What all the tenant's processes have reserved on it.
    pub mem_reserved: AtomicU64,
    /// What this process has reserved, as the broker counts it (so the
    /// process can tell what the others hold: `mem_reserved - mem_mine`).
    pub mem_mine: AtomicU64,
    /// Coordinated turns: every `slot_cycle_ns` from `slot_anchor_ns`
    /// (`CLOCK_MONOTONIC`), this process runs during `[slot_offset_ns,
    /// slot_offset_ns + slot_len_ns)` and holds its launches otherwise.
    /// `slot_len_ns` 0: no slot (paced by `share_ppm`). Read them under the
    /// page's `generation` (a sequence lock).
    pub slot_anchor_ns: AtomicU64,
    pub slot_cycle_ns: AtomicU64,
    pub slot_offset_ns: AtomicU64,
    pub slot_len_ns: AtomicU64,
}

pub const CLASS_STANDARD: u32 = 0;
pub const CLASS_LATENCY_CRITICAL: u32 = 1;
pub const CLASS_BEST_EFFORT: u32 = 2;

#[repr(C)]
#[derive(Debug)]
pub struct BudgetPage {
    pub magic: AtomicU32,
    pub version: AtomicU32,
    /// A sequence lock: odd while the broker writes, bumped again when it is
    /// done. A reader that sees it odd, or different after its reads, reads
    /// again; one that sees it unchanged since its last read knows nothing
    /// changed.
    pub generation: AtomicU64,
    pub devices: AtomicU32,
    /// The process's pid as the broker sees it (the host's: a process in a
    /// container's pid namespace knows itself by another number, NVML by
    /// this one); 0 when unknown.
    pub host_pid: AtomicU32,
    /// The broker's clock when it last wrote (a stale page means a broker
    /// that stopped).
    pub written_ns: AtomicU64,
    pub dev: [BudgetDev; MAX_DEVICES],
}

/// One device of a [`ProcessPage`].
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProcessDev {
    /// Kernel and graph launches (the broker's demand signal).
    pub launches: AtomicU64,
    /// GPU time charged by the gate (ns).
    pub charged_ns: AtomicU64,
    /// Time launches waited at the gate (ns), and how many waited.
    pub throttle_wait_ns: AtomicU64,
    pub throttled: AtomicU64,
    /// Memory in use and unused reservation (bytes), refused allocations.
    pub mem_used: AtomicU64,
    pub mem_credit: AtomicU64,
    pub mem_denials: AtomicU64,
    pub mem_peak: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
pub struct ProcessPage {
    pub magic: AtomicU32,
    pub version: AtomicU32,
    pub devices: AtomicU32,
    pub _pad: AtomicU32,
    pub dev: [ProcessDev; MAX_DEVICES],
}

/// Bytes to map for a page struct of `size` bytes (whole 4 KiB pages).
pub const fn mapped_len(size: usize) -> usize {
    size.div_ceil(4096) * 4096
}

pub const BUDGET_LEN: usize = mapped_len(std::mem::size_of::<BudgetPage>());
pub const PROCESS_LEN: usize = mapped_len(std::mem::size_of::<ProcessPage>());

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(size_of::<BudgetDev>(), 72);
        assert_eq!(size_of::<BudgetPage>(), 32 + 72 * MAX_DEVICES);
        assert_eq!(size_of::<ProcessDev>(), 64);
        assert_eq!(size_of::<ProcessPage>(), 16 + 64 * MAX_DEVICES);
        assert!(align_of::<BudgetPage>() <= 8 && align_of::<ProcessPage>() <= 8);
        assert_eq!(BUDGET_LEN, 8192);
        assert_eq!(PROCESS_LEN, 8192);
    }
}

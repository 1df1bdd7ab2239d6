//! # tslice-broker
//!
//! The node daemon that owns every tenant's budget: tenants are groups of
//! processes told apart by the kernel (cgroup, uid, gid), each with one
//! memory ledger per device shared by all its processes, and a share of
//! every device's time (requests guaranteed, limits as ceilings, spare time
//! by weight). Shims in tenant processes connect over a Unix socket
//! (`tslice-proto`), reserve memory in chunks, and read their compute budget
//! from a shared page with an atomic load.
//!
//! Modules: `config` (the TOML file and the policy source), `identity` (who
//! a peer is, from the kernel), `state` (tenants, ledgers, shares: plain
//! data), `pages` (the shared pages), `wire` (frames and descriptors),
//! `server` (the daemon), `metrics`, `status`.

pub mod config;
pub mod identity;
pub mod logs;
pub mod metrics;
pub mod pages;
pub mod pods;
pub mod server;
pub mod state;
pub mod status;
pub mod wire;

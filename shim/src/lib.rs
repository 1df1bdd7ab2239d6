//! # libtslice.so
//!
//! Loaded into a tenant process with `LD_PRELOAD`, the shim interposes on the
//! CUDA driver API: it caps the device memory the process can hold and (with
//! a compute limit) throttles its kernel launches to a share of GPU time.
//!
//! How calls reach it (see ARCHITECTURE.md):
//! * programs linked against `libcuda` bind to the exported wrappers directly;
//! * the CUDA runtime and frameworks `dlopen("libcuda.so.1")` and `dlsym` on
//!   that handle: the `dlsym` override ([`dlsym`]) answers hooked names with
//!   the wrappers;
//! * everything else is fetched through `cuGetProcAddress(_v2)`, whose
//!   wrappers ([`procaddr`]) map the driver's answer to the wrapper of the
//!   same ABI.
//!
//! One table ([`hooks`], `hooks/table.rs`) lists the hooked entry points and
//! drives all three, plus the test of the exported symbols.
//!
//! Hygiene: no constructor, no signal handler, no thread at load; state is
//! built lazily on the first CUDA call ([`state`]) and reset in a forked
//! child; no panic crosses the FFI boundary ([`ffi`]); `unsafe` stays in the
//! FFI edge, each block with a `SAFETY` comment; policy lives in
//! `tslice-policy`, which has none.
//!
//! Safety contract of the wrappers (`mem`, `launch`, `procaddr`, `init`):
//! each implements the driver entry point of the same row of the hook
//! table, and its caller must uphold that entry point's documented contract
//! (valid or NULL pointers, handles the driver gave out).

mod api;
mod broker;
mod capture;
mod context;
// Not exported from the unit-test runner (see dlsym.rs), hence unused there.
#[cfg_attr(test, allow(dead_code))]
mod dlsym;
mod ffi;
mod gate;
mod graphmem;
mod hooks;
mod init;
mod launch;
mod log;
mod mem;
mod nvml;
mod procaddr;
mod real;
mod records;
mod state;

//! # simcuda: a simulated CUDA driver
//!
//! This crate builds `libcuda.so` (soname `libcuda.so.1`): a CUDA *driver* on
//! which NVIDIA's real runtime (`libcudart.so.13`) and real nvcc-built
//! programs run on a machine without a GPU. Device state (the memory ledger,
//! the time-sliced execution engine, ground truth for tests) lives in
//! [`simgpu`], shared by every process that uses the same `SIMCUDA_DIR`.
//!
//! ## Conventions a test program can rely on
//!
//! * **Kernel durations.** Kernels are not executed. A kernel whose (mangled)
//!   name contains `sim_spin` runs for the number of nanoseconds given by its
//!   **first parameter, an `unsigned long long`** (read from
//!   `kernelParams[0]`, or from the first 8 bytes of the
//!   `CU_LAUNCH_PARAM_BUFFER_POINTER` buffer in `extra`). On a real GPU the
//!   same kernel spins on `%globaltimer` for that long, so the same test
//!   programs run on real hardware. Every other kernel runs
//!   `SIMCUDA_KERNEL_US` microseconds (default 10). A graph launch runs as one
//!   work item whose duration is the sum of its kernel nodes' durations.
//! * **Memory** is host memory (`mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`),
//!   so copies, memsets and round trips work; data changes only by copies and
//!   memsets. **Every device allocation is charged to the simgpu ledger
//!   rounded up to 2 MiB**, the page granularity the shim also counts with
//!   (`cuMemAllocPitch` charges pitch x height, pitch = width rounded up to
//!   512 B; arrays charge width x max(h,1) x max(d,1) x channels x element
//!   size, mipmapped arrays the sum of their levels; VMM `cuMemCreate`
//!   charges its size, which is a multiple of the 2 MiB granularity; async
//!   allocations are charged at `cuMemAllocAsync` and returned at
//!   `cuMemFreeAsync`, pools retain nothing; graph memory is charged while
//!   an executable graph backs it, see `graph`). Memory shared between
//!   processes (VMM descriptors, IPC handles; memfd-backed, so both processes
//!   see the same bytes) is charged once, to the process that allocated it,
//!   while it holds it. Host allocations
//!   (`cuMemAllocHost`, `cuMemHostAlloc`, registered memory) are not device
//!   memory and are not charged.
//! * **Ordering.** Each context has one FIFO queue in simgpu, so everything a
//!   context submits runs in submission order: `cuStreamWaitEvent` is
//!   satisfied by construction within a context (it only validates its
//!   arguments), and the legacy default stream's implicit synchronization
//!   holds trivially. Copies and memsets take effect immediately (data) and
//!   are also submitted as `Copy` work so that they are ordered in time;
//!   synchronous ones wait for their work item, i.e. for all prior work of the
//!   context, as CUDA's do.
//! * **Host functions** (`cuLaunchHostFunc`, `cuStreamAddCallback`) run in
//!   order on a driver-owned thread per context once the work submitted
//!   before them has completed; stream/context synchronization also waits for
//!   them. Work submitted after a host function is not held back by it.
//! * **Globals.** `cuModuleGetGlobal`/`cuLibraryGetGlobal` find a
//!   `__device__` variable's size in the ELF cubin inside the fatbin and hand
//!   out host-backed storage for it (uncharged, zero-initialized). When the
//!   image holds no readable ELF (compressed or PTX-only) they return
//!   `CUDA_ERROR_NOT_FOUND`; kernel lookups in such an image accept any name.
//! * **Fork.** A child process gets fresh per-process state (contexts,
//!   handles, allocations of the parent are not visible) and must call
//!   `cuInit` again, as with the real driver.
//!
//! ## Configuration (environment only)
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SIMCUDA_DRIVER_VERSION` | version reported by `cuDriverGetVersion` and used by `cuGetProcAddress` | 13050 |
//! | `SIMCUDA_KERNEL_US` | duration of kernels other than `sim_spin` | 10 |
//! | `SIMCUDA_LOG` | `1`: trace every call (name and result) and every lookup of an unimplemented entry point to stderr | off |
//!
//! plus simgpu's variables (`SIMCUDA_DIR`, `SIMCUDA_DEVICES`, `SIMCUDA_MEM`, ...).
//!
//! ## Layout
//!
//! `entry` (FFI guard, pointer helpers, export macros), `routing` (the one
//! table behind `cuGetProcAddress`), `dark` + `integrity` (private export
//! tables the runtime needs), `process` (per-process state, fork detection,
//! handle registries), `device`, `context`, `memory`, `copy`, `pool`,
//! `array`, `vmm`, `ipc`, `stream`, `memop`, `event`, `fatbin` + `module`,
//! `link`, `tensormap`, `launch`, `graph`, `capture`.

#[macro_use]
mod entry;

mod array;
mod capture;
mod config;
mod context;
mod copy;
mod dark;
mod device;
mod event;
mod fatbin;
mod graph;
mod init;
mod integrity;
mod ipc;
mod launch;
mod link;
mod memop;
mod memory;
mod module;
mod pool;
mod process;
mod routing;
mod stream;
mod tensormap;
mod texture;
mod vmm;

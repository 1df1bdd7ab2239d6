//! Issue 6: the promise "concurrent threads can never together pass the cap;
//! it never hangs a job", held against races, fork, hostile arguments and
//! exec. Ground truth is the simulated device's ledger; each test failed
//! before the fix it guards.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use tslice_tests::shim;
use tslice_tests::{build_cuda, cuda_src, field, profile_dir, SimGpu};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn firstuse() -> PathBuf {
    build_cuda(&cuda_src("firstuse.c"), &["-ldl", "-lpthread"])
}

fn hardening() -> PathBuf {
    let libdir = format!("-L{}", profile_dir().display());
    build_cuda(
        &cuda_src("hardening.c"),
        &[&libdir, "-lcuda", "-lpthread", "-ldl"],
    )
}

/// Waits for `c`, killing it (and failing) after `limit`: a hang is a
/// failure, never a stuck test run.
fn wait_limited(mut c: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while c.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!(
                "{what} hung (killed after {limit:?}):\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.wait_with_output().unwrap()
}

fn run_limited(gpu: &SimGpu, prog: &Path, args: &[&str], limit: Duration) -> (u32, String, String) {
    let c = gpu
        .command(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = c.id();
    let o = wait_limited(c, limit, &format!("{} {args:?}", prog.display()));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "{} {args:?} failed ({}):\n{out}\n{err}",
        prog.display(),
        o.status
    );
    (pid, out, err)
}

/// Defect 1: 32 threads whose first CUDA use races through dlopen, dlsym,
/// cuInit and a 64 MiB allocation get exactly the 16 that fit under 1 GiB,
/// whichever way they look the driver up; none gets the real driver's
/// function or a lookup failure.
fn first_use_race(lookup: &str) {
    let prog = firstuse();
    for run in 0..6 {
        let gpu = SimGpu::new()
            .env("TSLICE_HBM_LIMIT", "1GiB")
            .preload(&shim());
        let (_, out, err) =
            run_limited(&gpu, &prog, &["32", "64", lookup], Duration::from_secs(60));
        let peak = gpu.monitor(0).snapshot().mem_peak;
        assert!(
            peak <= GIB,
            "run {run} ({lookup}): the device held {peak} bytes under a 1 GiB cap: {out}{err}"
        );
        assert_eq!(
            field(&out, "other"),
            0.0,
            "run {run} ({lookup}): a thread failed otherwise: {out}{err}"
        );
        assert_eq!(field(&out, "ok"), 16.0, "run {run} ({lookup}): {out}{err}");
        assert_eq!(field(&out, "oom"), 16.0, "run {run} ({lookup}): {out}{err}");
    }
}

#[test]
fn threads_racing_through_first_use_via_a_handle_never_pass_the_cap() {
    first_use_race("handle");
}

#[test]
fn threads_racing_through_first_use_via_rtld_default_never_pass_the_cap() {
    first_use_race("default");
}

/// The same when cuInit comes from the handle and the allocator from
/// RTLD_DEFAULT: the allocator's wrapper must not run before the shim has
/// resolved the driver (it returned CUDA_ERROR_NOT_FOUND).
#[test]
fn threads_racing_through_first_use_with_mixed_lookups_never_pass_the_cap() {
    first_use_race("mixed");
}

/// Defect 2: a context destroyed (or a primary context reset) while another
/// context keeps asking for the whole cap: the charge comes back only after
/// the driver has freed, so the device never holds two caps.
fn destroy_race(mode: &str) {
    let prog = hardening();
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(
        &gpu,
        &prog,
        &[mode, "1024", "150"],
        Duration::from_secs(120),
    );
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let peak = gpu.monitor(0).snapshot().mem_peak;
    assert!(
        peak <= GIB,
        "{mode}: the device peaked at {} MiB under a 1 GiB cap: {out}",
        peak / MIB
    );
}

#[test]
fn context_destroy_gives_the_charge_back_only_after_the_driver_freed() {
    destroy_race("destroy");
}

#[test]
fn primary_context_reset_gives_the_charge_back_only_after_the_driver_freed() {
    destroy_race("reset");
}

/// Defect 2, second half: 48 threads allocating and freeing in a context
/// while it is destroyed leave no charge behind.
#[test]
fn threads_using_a_context_while_it_is_destroyed_leak_no_charge() {
    let prog = hardening();
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (pid, out, err) = run_limited(
        &gpu,
        &prog,
        &["storm", "48", "1024", "6"],
        Duration::from_secs(120),
    );
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    assert_eq!(field(&out, "shim_used"), 0.0, "{out}");
    let snap = gpu.monitor(0).snapshot();
    let me = snap
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("the driver saw the process");
    assert!(
        me.mem_peak <= GIB,
        "the device peaked at {} MiB: {out}",
        me.mem_peak / MIB
    );
}

/// Defect 3: a fork while 16 threads are inside their first CUDA calls; the
/// child's own cuInit must not hang, with the shim and on the bare driver.
fn fork_during_first_use(with_shim: bool) {
    let prog = hardening();
    for spin in [
        0u64, 1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000,
    ] {
        for _ in 0..2 {
            let mut gpu = SimGpu::new().env("TSLICE_HBM_LIMIT", "1GiB");
            if with_shim {
                gpu = gpu.preload(&shim());
            }
            let spin = spin.to_string();
            let (_, out, err) = run_limited(
                &gpu,
                &prog,
                &["forkinit", "16", &spin],
                Duration::from_secs(60),
            );
            assert!(
                out.contains("child_hung=0") && out.contains("OK FAILS=0"),
                "spin {spin}: {out}{err}"
            );
        }
    }
}

#[test]
fn fork_during_first_cuda_calls_never_hangs_the_child_under_the_shim() {
    fork_during_first_use(true);
}

#[test]
fn fork_during_first_cuda_calls_never_hangs_the_child_on_the_simulated_driver() {
    fork_during_first_use(false);
}

/// Defect 4: stream-ordered allocations are charged to the stream's device
/// and to the pool's location, not to the current device.
#[test]
fn stream_ordered_allocations_are_charged_to_their_device() {
    let prog = hardening();
    let gpu = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB")
        .env("TSLICE_HBM_LIMIT", "0=8GiB,1=1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &prog, &["twogpu"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let peak1 = gpu.monitor(1).snapshot().mem_peak;
    assert!(
        peak1 <= GIB,
        "device 1 peaked at {} MiB under its 1 GiB cap",
        peak1 / MIB
    );
}

/// Defect 7: invalid arguments get the driver's error class, not "out of
/// memory"; the same program passes on the bare driver.
#[test]
fn invalid_arguments_get_the_drivers_error_class() {
    let prog = hardening();
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &prog, &["errors"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let bare = SimGpu::new();
    let (_, out, err) = run_limited(&bare, &prog, &["errors"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "bare driver: {out}{err}");
}

/// Defect 7: after a cuInit that failed because the driver cannot be
/// loaded, every entry point says "not initialized", as a real driver does
/// before a successful cuInit.
#[test]
fn without_a_driver_every_call_is_not_initialized() {
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .env("TSLICE_LIBCUDA", "/nonexistent/libcuda.so.1")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["nodriver"], Duration::from_secs(30));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    assert!(
        err.contains("cannot load the CUDA driver"),
        "one line says why: {err}"
    );
    // Racing threads see the same.
    let (_, out, err) = run_limited(
        &gpu,
        &firstuse(),
        &["4", "2", "default"],
        Duration::from_secs(30),
    );
    assert_eq!(field(&out, "other"), 4.0, "{out}{err}");
    assert_eq!(
        field(&out, "first_other"),
        10_003.0,
        "cuInit: CUDA_ERROR_NOT_INITIALIZED: {out}{err}"
    );
}

/// Defect 8: the stats ABI before the first CUDA call says "no cap" as the
/// header promises (UINT64_MAX), not 0.
#[test]
fn stats_before_the_first_cuda_call_report_no_cap() {
    let prog = build_cuda(&cuda_src("stats0.c"), &["-ldl"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &prog, &[], Duration::from_secs(30));
    assert!(
        out.contains(&format!("hbm_limit={}", u64::MAX)),
        "{out}{err}"
    );
    assert!(out.contains("hbm_limited=0"), "{out}{err}");
}

/// Defect 9: exec ends the old program's use of the device, as a real
/// driver's (close-on-exec) file descriptors do: its memory is released at
/// once, and the new program starts from nothing under the same pid.
#[test]
fn exec_releases_the_old_programs_memory() {
    let prog = build_cuda(
        &cuda_src("execself.c"),
        &[&format!("-L{}", profile_dir().display()), "-lcuda"],
    );
    let gpu = SimGpu::new();
    let mut c = gpu
        .command(&prog)
        .arg("before")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = c.id();
    let mut stdin = c.stdin.take().unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let mut expect_line = |want: &str| {
        let l = lines.next().expect("a line").expect("read");
        assert!(l.starts_with(want), "expected {want}, got {l:?}");
        l
    };
    expect_line("held");
    let used = |gpu: &SimGpu| {
        let snap = gpu.monitor(0).snapshot();
        snap.processes
            .iter()
            .filter(|p| p.pid == pid && p.alive)
            .map(|p| p.mem_used)
            .sum::<u64>()
    };
    assert_eq!(used(&gpu), 64 * MIB, "before exec the program holds 64 MiB");
    writeln!(stdin, "go").unwrap();
    // The new image has not touched CUDA yet.
    expect_line("execd");
    assert_eq!(used(&gpu), 0, "exec released the old image's memory");
    assert_eq!(gpu.monitor(0).snapshot().mem_used, 0);
    writeln!(stdin, "go").unwrap();
    expect_line("held");
    assert_eq!(
        used(&gpu),
        32 * MIB,
        "the new image holds only its own 32 MiB"
    );
    writeln!(stdin, "go").unwrap();
    let o = wait_limited(c, Duration::from_secs(30), "execself");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Defect 8: a program that repeats a bad call a thousand times gets a
/// handful of diagnostic lines, not a thousand; a negative device is the
/// driver's to reject and is not called "beyond the 64 devices".
#[test]
fn repeated_warnings_are_rate_limited() {
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(
        &gpu,
        &hardening(),
        &["badcreate", "1000"],
        Duration::from_secs(60),
    );
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("tslice[")).collect();
    assert!(
        lines.len() <= 10,
        "{} lines for 2000 bad calls:\n{err}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("device 70 is beyond the 64 devices")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("seen 1000 times")),
        "the count is reported: {err}"
    );
    assert!(
        !err.contains("device -1"),
        "a negative device is the driver's to reject: {err}"
    );
}

/// Defect 8: per-device entries that match none of the process's devices
/// are reported once, naming the entry.
#[test]
fn entries_for_devices_the_process_does_not_have_are_reported() {
    let prog = build_cuda(&cuda_src("hello.cu"), &[]);
    let uuid = "GPU-01234567-89ab-cdef-0123-456789abcdef";
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", &format!("8GiB,99=1GiB,{uuid}=2GiB"))
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &prog, &[], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let warns: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("matches none of the 1 devices"))
        .collect();
    assert_eq!(warns.len(), 2, "{err}");
    assert!(
        warns
            .iter()
            .any(|l| l.contains("TSLICE_HBM_LIMIT") && l.contains("device 99")),
        "{err}"
    );
    assert!(warns.iter().any(|l| l.contains(uuid)), "{err}");
}

/// Review findings on the destroy protocol (each failed before its fix).
/// A stream-ordered allocation belongs to its stream's context, not to the
/// context current when it was made: destroying the current one must not
/// give its charge back (the device peaked at 1.5 GiB under a 1 GiB cap).
#[test]
fn stream_ordered_allocations_belong_to_their_streams_context() {
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["xctx"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let peak = gpu.monitor(0).snapshot().mem_peak;
    assert!(peak <= GIB, "the device peaked at {} MiB", peak / MIB);

    let gpu = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB")
        .env("TSLICE_HBM_LIMIT", "0=8GiB,1=1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["xdev"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    let peak1 = gpu.monitor(1).snapshot().mem_peak;
    assert!(peak1 <= GIB, "device 1 peaked at {} MiB", peak1 / MIB);
}

/// A destroy waits for the context's queued work, which may wait for
/// another thread's allocation: the shim must not make that allocation
/// wait for the destroy (it deadlocked, or stalled until a timeout).
#[test]
fn a_destroy_never_makes_other_threads_allocations_wait() {
    let (_, out, err) = run_limited(
        &SimGpu::new(),
        &hardening(),
        &["hostwait"],
        Duration::from_secs(60),
    );
    assert!(out.contains("OK FAILS=0"), "bare driver: {out}{err}");
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["hostwait"], Duration::from_secs(60));
    assert!(
        out.contains("host_timed_out=0") && out.contains("OK FAILS=0"),
        "{out}{err}"
    );
    assert!(
        field(&out, "neighbour_alloc_s") < 1.0,
        "the neighbour waited: {out}"
    );
}

/// The last primary release racing with a retain in another thread: the
/// destroyed context's charges come back even though the device's primary
/// context is active again by the time the release returns.
#[test]
fn a_retain_racing_with_the_last_release_does_not_keep_freed_charges() {
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["relrace"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    assert_eq!(field(&out, "whole_cap"), 0.0, "{out}");
}

/// The runtime asks for the CUDA 7.0 ABI of the primary release and reset
/// (cudaDeviceReset): those are hooked too, so the charges come back.
#[test]
fn the_runtimes_primary_reset_abi_gives_charges_back() {
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "1GiB")
        .preload(&shim());
    let (_, out, err) = run_limited(&gpu, &hardening(), &["v1reset"], Duration::from_secs(60));
    assert!(out.contains("OK FAILS=0"), "{out}{err}");
    assert_eq!(field(&out, "after_reset_shim_used"), 0.0, "{out}");
}

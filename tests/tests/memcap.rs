//! Issue 2: hard HBM caps, proven with real nvcc-built programs running
//! through the real CUDA runtime on the simulated driver, with libtslice.so
//! preloaded. Ground truth comes from the simulated driver's ledger.

use tslice_tests::shim;
use tslice_tests::{build_cuda, cuda_src, field, profile_dir, text_field, SimGpu};

const MIB: u64 = 1 << 20;

#[test]
fn every_allocation_path_is_capped_and_meminfo_shows_the_cap() {
    let prog = build_cuda(&cuda_src("memcap.cu"), &[]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "64MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["64"]);
    assert!(out.contains("OK FAILS=0"), "{out}");
    assert_eq!(field(&out, "info_total") as u64, 64 * MIB);
    assert_eq!(field(&out, "hbm_limit") as u64, 64 * MIB);
    assert!(field(&out, "hbm_denials") >= 10.0, "{out}");
    let snap = gpu.monitor(0).snapshot();
    assert!(
        snap.mem_peak <= 64 * MIB,
        "the driver saw {} bytes in use under a 64 MiB cap",
        snap.mem_peak
    );
    assert!(
        snap.mem_peak >= 62 * MIB,
        "the cap was used up to its last page: {}",
        snap.mem_peak
    );

    // Control: without the shim the same program sees the whole device.
    let plain = SimGpu::new().env("SIMCUDA_MEM", "1GiB");
    let o = plain.run(&prog, &["64"]);
    assert!(!o.status.success(), "the checks must fail without the shim");
    assert_eq!(
        field(&String::from_utf8_lossy(&o.stdout), "info_total") as u64,
        1 << 30
    );
}

#[test]
fn sixteen_threads_never_push_the_drivers_ledger_over_the_cap() {
    let prog = build_cuda(&cuda_src("memcap_threads.cu"), &[]);
    let cap = 128 * MIB;
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "128MiB")
        .preload(&shim());
    let child = gpu
        .command(&prog)
        .arg("300")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("OK FAILS=0"), "{out}");
    // Typically 1000-1600 succeed; fewer when other tests load the CPU.
    assert!(field(&out, "ok_allocs") > 100.0, "{out}");
    assert!(
        field(&out, "oom") > 50.0,
        "the cap must actually be contended: {out}"
    );
    let snap = gpu.monitor(0).snapshot();
    let me = snap
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("the driver saw the process");
    assert!(
        me.mem_peak <= cap,
        "ledger peak {} > cap {cap}",
        me.mem_peak
    );
    assert!(
        me.mem_peak > cap - 24 * MIB,
        "the threads pressed against the cap: {}",
        me.mem_peak
    );
    assert_eq!(me.mem_used, 0);
}

#[test]
fn driver_api_lookups_get_the_wrapper_of_the_same_abi() {
    let prog = build_cuda(&cuda_src("drvapi.c"), &["-ldl"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "64MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["64"]);
    assert!(
        out.contains("shim=1") && out.contains("OK FAILS=0"),
        "{out}"
    );
    assert_eq!(field(&out, "info_total") as u64, 64 * MIB);
    assert_eq!(
        field(&out, "over_cap_result") as u32,
        2,
        "CUDA_ERROR_OUT_OF_MEMORY"
    );
    // And on the bare driver the same lookups give the driver's own functions.
    let out = SimGpu::new().run_ok(&prog, &["64"]);
    assert!(
        out.contains("shim=0") && out.contains("OK FAILS=0"),
        "{out}"
    );
}

#[test]
fn program_linked_against_libcuda_is_capped() {
    let libdir = format!("-L{}", profile_dir().display());
    let prog = build_cuda(&cuda_src("linked.c"), &[&libdir, "-lcuda"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "32MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["32"]);
    assert!(out.contains("OK FAILS=0"), "{out}");
    assert_eq!(field(&out, "device_total") as u64, 32 * MIB);
}

#[test]
fn per_thread_default_stream_build_is_capped() {
    let prog = build_cuda(&cuda_src("ptds.cu"), &["--default-stream", "per-thread"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "64MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["64"]);
    assert!(out.contains("OK FAILS=0"), "{out}");
    assert_eq!(field(&out, "hbm_denials") as u64, 1);
}

#[test]
fn forked_child_initialises_cuda_again_under_its_own_budget() {
    let libdir = format!("-L{}", profile_dir().display());
    let prog = build_cuda(&cuda_src("forkchild.c"), &[&libdir, "-lcuda"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "64MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["64"]);
    assert!(
        out.contains("child_fails=0") && out.contains("OK FAILS=0"),
        "{out}"
    );
    assert_eq!(field(&out, "child_total") as u64, 64 * MIB);
    let snap = gpu.monitor(0).snapshot();
    assert_eq!(
        snap.processes.len(),
        2,
        "parent and child each used the device"
    );
    assert!(snap.processes.iter().all(|p| p.mem_peak <= 64 * MIB));
}

#[test]
fn destroyed_contexts_give_their_memory_back() {
    let libdir = format!("-L{}", profile_dir().display());
    let prog = build_cuda(&cuda_src("ctxlife.c"), &[&libdir, "-lcuda"]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "64MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &["64"]);
    assert!(out.contains("OK FAILS=0"), "{out}");
    assert!(gpu.monitor(0).snapshot().mem_peak <= 64 * MIB);
}

/// An invalid value fails closed: the first CUDA call fails, and exactly one
/// stderr line names the variable, the value and the accepted forms.
#[test]
fn invalid_limits_fail_closed_with_one_clear_line() {
    let prog = build_cuda(&cuda_src("memcap.cu"), &[]);
    let cases = [
        ("TSLICE_HBM_LIMIT", "8 gigs", "unknown unit"),
        ("TSLICE_HBM_LIMIT", "0", "0 bytes"),
        ("TSLICE_HBM_LIMIT", "150%", "more than 100%"),
        ("TSLICE_HBM_LIMIT", "-1G", "does not start with a number"),
        ("TSLICE_HBM_LIMIT", "GPU-xyz=1G", "not a GPU UUID"),
        ("TSLICE_HBM_LIMIT", "", "empty"),
        ("TSLICE_COMPUTE_LIMIT", "fast", "not a percentage"),
        ("TSLICE_COMPUTE_LIMIT", "0%", "less than 0.1%"),
        ("TSLICE_COMPUTE_BURST", "2", "no unit"),
        // Issue 6, defect 8: caps below one page, overflows, negative durations.
        ("TSLICE_HBM_LIMIT", "1", "less than one 2 MiB page"),
        ("TSLICE_HBM_LIMIT", "1KB", "less than one 2 MiB page"),
        ("TSLICE_HBM_LIMIT", "99999999999999999999", "too large"),
        ("TSLICE_COMPUTE_BURST", "-1ms", "negative"),
    ];
    for (var, value, problem) in cases {
        let gpu = SimGpu::new().env(var, value).preload(&shim());
        let o = gpu.run(&prog, &["64"]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{var}={value:?} must fail: {stdout}");
        assert!(
            stdout.contains("FAIL") && stdout.contains("cudaFree(0)"),
            "the first CUDA call fails: {stdout}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tslice")).collect();
        assert_eq!(lines.len(), 1, "{var}={value:?}: {stderr}");
        let l = lines[0];
        assert!(l.contains(&format!("{var}={value:?} is invalid")), "{l}");
        assert!(
            l.contains(problem)
                && l.contains("accepted:")
                && l.contains("CUDA_ERROR_NOT_PERMITTED"),
            "{l}"
        );
    }
}

/// Issue 6, defect 8: the fail-closed line is the only explanation a tenant
/// gets, so it is printed even with TSLICE_LOG=off; a huge value is cut,
/// not echoed whole.
#[test]
fn the_fail_closed_line_is_printed_whatever_the_log_level_and_stays_short() {
    let prog = build_cuda(&cuda_src("memcap.cu"), &[]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "8 gigs")
        .env("TSLICE_LOG", "off")
        .preload(&shim());
    let o = gpu.run(&prog, &["64"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tslice")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("TSLICE_HBM_LIMIT=\"8 gigs\" is invalid"),
        "{stderr}"
    );

    let huge = format!("8{}", "G".repeat(65536));
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", &huge)
        .preload(&shim());
    let o = gpu.run(&prog, &["64"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tslice")).collect();
    assert_eq!(lines.len(), 1, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(lines[0].len() < 1000, "a {} byte line", lines[0].len());
    assert!(
        lines[0].contains("(65537 bytes)") && lines[0].contains("accepted:"),
        "{}",
        lines[0]
    );
}

/// NVML agrees with the driver API under a cap, reached every way a
/// program reaches it (linked; dlopen'ed and looked up on the handle, twice,
/// with NVML unloaded between; looked up globally with another NVML
/// interposer preloaded before the shim), and lists this process only,
/// while another tenant's process holds memory on the same GPU. A device
/// without a cap is shown as it is.
#[test]
fn nvml_shows_the_cap_and_only_the_tenants_own_process() {
    let libdir = format!("-L{}", tslice_tests::profile_dir().display());
    let linked = build_cuda(
        &cuda_src("nvml_cap.c"),
        &["-DLINKED", &libdir, "-lcuda", "-lnvidia_ml", "-ldl"],
    );
    let loaded = build_cuda(&cuda_src("nvml_cap.c"), &[&libdir, "-lcuda", "-ldl"]);
    let other = build_cuda(&cuda_src("nvml_other.c"), &["-shared", "-fPIC", "-ldl"]);
    let gpu = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB");
    let mut holder = tslice_tests::Interactive::spawn({
        let mut c = gpu.command(&tslice_tests::tenant_prog());
        c.args(["grab", "512", "64"]);
        c
    });
    assert_eq!(field(&holder.line(), "held") as u64, 512 << 20);
    let run = |prog: &std::path::Path, args: &[&str], preload: String, limit: &str| {
        let mut c = gpu.command(prog);
        c.args(args)
            .env("LD_PRELOAD", preload)
            .env("TSLICE_HBM_LIMIT", limit);
        tslice_tests::run_checked(c)
    };
    let shim = tslice_tests::shim().display().to_string();
    let both = format!("{}:{shim}", other.display());
    for (prog, mode, preload) in [
        (&linked, "linked", shim.clone()),
        (&loaded, "dlopen", shim.clone()),
        (&loaded, "default", both),
    ] {
        let text = run(prog, &["300", mode], preload, "1GiB");
        assert_eq!(field(&text, "nvml_total") as u64, 1 << 30, "{mode}: {text}");
        assert_eq!(
            field(&text, "nvml_used") as u64,
            300 << 20,
            "{mode}: {text}"
        );
        assert_eq!(
            field(&text, "listed"),
            1.0,
            "{mode}: the other tenant's process is not listed"
        );
        assert_eq!(field(&text, "mine"), 1.0, "{mode}");
        if mode == "dlopen" {
            assert_eq!(
                field(&text, "round1_total") as u64,
                1 << 30,
                "after a reload: {text}"
            );
        }
    }
    // A cap on device 1 only: device 0 is shown as it is (both processes).
    let text = run(&loaded, &["300", "dlopen", "0"], shim.clone(), "1=1GiB");
    assert_eq!(field(&text, "nvml_total") as u64, 16 << 30, "{text}");
    assert_eq!(field(&text, "listed"), 2.0, "{text}");
    // Without the shim, NVML shows the whole GPU and every process.
    let text = run(&linked, &["300", "linked"], String::new(), "");
    assert_eq!(field(&text, "listed"), 2.0, "{text}");
    assert_eq!(field(&text, "nvml_total") as u64, 16 << 30);
    assert!(holder.finish().success());
}

#[test]
fn graph_memory_counts_against_the_cap_while_the_driver_holds_it() {
    let prog = build_cuda(&cuda_src("graph_cap.cu"), &[]);
    let gpu = SimGpu::new()
        .env("TSLICE_HBM_LIMIT", "100MiB")
        .preload(&shim());
    let out = gpu.run_ok(&prog, &[]);
    assert!(out.contains("OK FAILS=0"), "{out}");
    // Capturing cudaMallocAsync makes a node: nothing is charged.
    assert_eq!(field(&out, "captured_used_mb"), 50.0, "{out}");
    // 50 MiB held + the graph's 64 MiB exceed the cap: the launch is refused.
    assert_eq!(
        text_field(&out, "launch_over_cap"),
        "cudaErrorMemoryAllocation"
    );
    assert_eq!(field(&out, "launched_used_mb"), 64.0, "{out}");
    // The graph's memory is the tenant's: 50 MiB more do not fit beside it...
    assert_eq!(
        text_field(&out, "malloc_beside_graph"),
        "cudaErrorMemoryAllocation"
    );
    // ...until the graph's pool is trimmed; then the graph cannot come back.
    assert_eq!(field(&out, "trimmed_used_mb"), 0.0, "{out}");
    assert_eq!(
        text_field(&out, "relaunch_over_cap"),
        "cudaErrorMemoryAllocation"
    );
    // Destroyed, the executable's memory stays in the device's graph pool,
    // charged, until a trim.
    assert_eq!(field(&out, "destroyed_used_mb"), 64.0, "{out}");
    assert_eq!(field(&out, "reinstantiated_launches"), 3.0, "{out}");
    assert_eq!(field(&out, "reinstantiated_used_mb"), 64.0, "{out}");
    assert_eq!(field(&out, "destroyed_trimmed_mb"), 0.0, "{out}");
    assert_eq!(text_field(&out, "failed_launch"), "cudaErrorInvalidValue");
    assert_eq!(field(&out, "after_failed_launch_mb"), 0.0, "{out}");
    assert_eq!(
        gpu.monitor(0).snapshot().mem_used,
        0,
        "a failed launch left graph memory held"
    );
    // Ground truth: the driver never held more than the cap.
    let snap = gpu.monitor(0).snapshot();
    assert!(
        snap.mem_peak <= 100 * MIB,
        "peak {} over the cap",
        snap.mem_peak
    );
    assert!(
        snap.mem_peak >= 64 * MIB,
        "the graph's memory was backed: {snap:?}"
    );

    // Control: without the shim the graph launches beside the 50 MiB.
    let plain = SimGpu::new().env("SIMCUDA_MEM", "1GiB");
    let o = plain.run(&prog, &[]);
    assert_eq!(
        text_field(&String::from_utf8_lossy(&o.stdout), "launch_over_cap"),
        "cudaSuccess"
    );
}

#[test]
fn memory_imported_from_another_process_is_charged_to_its_owner_only() {
    use tslice_tests::Interactive;
    let prog = build_cuda(
        &cuda_src("share.cu"),
        &[&format!("-L{}", profile_dir().display()), "-lcuda"],
    );
    let gpu = SimGpu::new().preload(&shim());
    let word = |l: &str, k: &str| -> String { text_field(l, k).to_string() };
    // The owners are capped at 16 MiB, the importers at 2 MiB: 8 MiB of IPC
    // memory and 4 MiB of VMM memory can only be opened because an import
    // is not charged to the importer.
    let mut cmd = gpu.command(&prog);
    cmd.env("TSLICE_HBM_LIMIT", "16MiB").arg("ipc-export");
    let mut owner = Interactive::spawn(cmd);
    let handle = word(&owner.line(), "handle");
    owner.line();
    owner.line();
    let o = gpu
        .command(&prog)
        .env("TSLICE_HBM_LIMIT", "2MiB")
        .args(["ipc-import", &handle])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("OK FAILS=0") && out.contains("word=0x5a5a5a5a"),
        "{out}"
    );
    assert_eq!(word(&owner.ask("check"), "word"), "0x77777777");
    assert!(owner.finish().success());

    let mut cmd = gpu.command(&prog);
    cmd.env("TSLICE_HBM_LIMIT", "16MiB").arg("vmm-export");
    let mut owner = Interactive::spawn(cmd);
    let fd = word(&owner.line(), "fd");
    owner.line();
    let pid = owner.pid().to_string();
    let o = gpu
        .command(&prog)
        .env("TSLICE_HBM_LIMIT", "2MiB")
        .args(["vmm-import", &pid, &fd])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("OK FAILS=0") && out.contains("word=0x3c3c3c3c"),
        "{out}"
    );
    // Nothing of it is charged to the importer (its view of its 2 MiB)...
    assert_eq!(field(&out, "used_mb"), 0.0, "{out}");
    // ...and the device holds it once, for its owner.
    let snap = gpu.monitor(0).snapshot();
    assert_eq!(snap.mem_used, 4 * MIB, "{snap:?}");
    let holders: Vec<_> = snap.processes.iter().filter(|p| p.mem_used > 0).collect();
    assert_eq!(holders.len(), 1, "{snap:?}");
    assert_eq!(holders[0].pid, owner.pid());
    assert_eq!(word(&owner.ask("release"), "used_mb"), "0");
    assert!(owner.finish().success());
    assert_eq!(gpu.monitor(0).snapshot().mem_used, 0);
}

//! The simulated driver on its own (no shim): real nvcc-built programs
//! through the real CUDA runtime, checked by their output and by the simgpu
//! ledger read from outside the process.

use std::path::PathBuf;
use tslice_tests::{build_cuda, cuda_src, field, profile_dir, text_field, Interactive, SimGpu};

const MIB: f64 = (1u64 << 20) as f64;

fn assert_ok(out: &str) {
    assert!(
        out.contains("OK FAILS=0"),
        "program reported failures:\n{out}"
    );
}

/// After the program exits, nothing is left charged on the device.
fn assert_ledger_empty(sim: &SimGpu, ordinal: u32) {
    let snap = sim.monitor(ordinal).snapshot();
    assert_eq!(
        snap.mem_used, 0,
        "device {ordinal} ledger not empty after exit: {snap:?}"
    );
}

#[test]
fn hello_allocates_launches_and_round_trips() {
    let prog = build_cuda(&cuda_src("hello.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(
        field(&out, "malloc_delta"),
        2.0 * MIB,
        "1 MiB is charged as one 2 MiB page"
    );
    assert_eq!(field(&out, "after_free_delta"), 0.0);
    let snap = sim.monitor(0).snapshot();
    assert_eq!(snap.mem_used, 0);
    assert!(snap.mem_peak >= 2 << 20, "peak {snap:?}");
}

#[test]
fn streams_events_and_elapsed_time_follow_sim_spin() {
    let prog = build_cuda(&cuda_src("streams.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "alloc_delta"), 8.0 * MIB);
    assert_eq!(field(&out, "end_delta"), 0.0);
    let ms = field(&out, "elapsed_ms");
    assert!(
        (9.9..11.5).contains(&ms),
        "5 x 2 ms sim_spin kernels took {ms} ms"
    );
    assert_ledger_empty(&sim, 0);
}

#[test]
fn device_properties_and_two_devices() {
    let prog = build_cuda(&cuda_src("device.cu"), &[]);
    let sim = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB");
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "count"), 2.0);
    for line in out
        .lines()
        .filter(|l| l.starts_with("dev") && l.contains("name="))
    {
        assert!(
            line.contains("name=\"NVIDIA H100 80GB HBM3 (simulated)\""),
            "{line}"
        );
        assert!(
            line.contains("cc=9.0") && line.contains("sms=132") && line.contains("warp=32"),
            "{line}"
        );
        assert!(line.contains(&format!("mem={}", 16u64 << 30)), "{line}");
    }
    let uuids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("uuid=").nth(1))
        .collect();
    let buses: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("bus=").nth(1))
        .map(|s| s.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(uuids.len(), 2);
    assert_ne!(uuids[0], uuids[1], "device UUIDs must differ");
    assert_ne!(buses[0], buses[1], "PCI bus ids must differ");
    assert_eq!(field(&out, "dev0_delta"), 2.0 * MIB);
    assert_eq!(field(&out, "dev1_delta"), 2.0 * MIB);
    assert_ledger_empty(&sim, 0);
    assert_ledger_empty(&sim, 1);
}

#[test]
fn every_allocation_path_is_charged_in_2mib_pages() {
    let prog = build_cuda(&cuda_src("alloc.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "malloc_delta"), 4.0 * MIB);
    assert_eq!(field(&out, "pitch"), 1024.0);
    assert_eq!(
        field(&out, "pitch_delta"),
        4.0 * MIB,
        "pitch 1024 x 3000 rows rounds up to 4 MiB"
    );
    assert_eq!(field(&out, "managed_delta"), 2.0 * MIB);
    assert_eq!(field(&out, "async_delta"), 6.0 * MIB);
    assert_eq!(field(&out, "pool_delta"), 2.0 * MIB);
    assert_eq!(field(&out, "after_async_delta"), 0.0);
    assert_eq!(field(&out, "array_delta"), 4.0 * MIB);
    assert_eq!(field(&out, "array3d_delta"), 16.0 * MIB);
    assert_eq!(
        field(&out, "mipmap_delta"),
        6.0 * MIB,
        "4 MiB + 1 MiB + 256 KiB rounds up to 6 MiB"
    );
    assert_eq!(field(&out, "after_arrays_delta"), 0.0);
    assert_eq!(field(&out, "granularity"), 2.0 * MIB);
    assert_eq!(field(&out, "vmm_delta"), 4.0 * MIB);
    assert_eq!(field(&out, "end_delta"), 0.0);
    let snap = sim.monitor(0).snapshot();
    assert_eq!(snap.mem_used, 0);
    assert!(snap.mem_peak >= 16 << 20, "{snap:?}");
}

#[test]
fn out_of_memory_at_the_device_size() {
    let prog = build_cuda(&cuda_src("oom.cu"), &[]);
    let sim = SimGpu::new().env("SIMCUDA_MEM", "1GiB");
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "total"), (1u64 << 30) as f64);
    assert_eq!(field(&out, "free_end"), (1u64 << 30) as f64);
    let snap = sim.monitor(0).snapshot();
    assert_eq!(snap.mem_used, 0);
    assert!(
        snap.mem_peak <= 1 << 30,
        "the ledger never exceeds the device: {snap:?}"
    );
}

#[test]
fn graphs_run_the_sum_of_their_kernels() {
    let prog = build_cuda(&cuda_src("graph.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "captured_nodes"), 5.0);
    let ms = field(&out, "capture_elapsed_ms");
    assert!(
        (23.9..26.0).contains(&ms),
        "two launches of 4 x 3 ms took {ms} ms"
    );
    let ms = field(&out, "explicit_elapsed_ms");
    assert!(
        (9.9..11.5).contains(&ms),
        "2 x 5 ms kernel nodes took {ms} ms"
    );
    assert_ledger_empty(&sim, 0);
}

#[test]
fn graph_host_and_memory_nodes_and_when_graph_memory_is_charged() {
    let prog = build_cuda(&cuda_src("graphmem.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    // kernel (4 ms) -> host node -> kernel (4 ms); then both updated to 1 ms
    // (upper bounds leave room for a busy machine: the device runs in real time).
    let ms = field(&out, "host_graph_ms");
    assert!(
        (7.9..20.0).contains(&ms),
        "4 + 4 ms with a host node between took {ms} ms"
    );
    assert_eq!(field(&out, "host_calls"), 5.0);
    let ms = field(&out, "updated_graph_ms");
    assert!(
        (1.9..8.0).contains(&ms),
        "updated to 1 + 1 ms, took {ms} ms"
    );
    assert_eq!(field(&out, "host_calls2"), 10.0);
    let ms = field(&out, "whole_update_ms");
    assert!(
        (3.9..10.0).contains(&ms),
        "updated from a graph of 2 + 2 ms, took {ms} ms"
    );
    // Graph memory: nothing at instantiation; 64 MiB from the first launch,
    // kept across launches and past the free node, returned by a trim,
    // charged again by an upload, kept by the device's graph pool past the
    // executable's destruction until a trim.
    assert_eq!(field(&out, "instantiated_mb"), 0.0);
    assert_eq!(field(&out, "launched_mb"), 64.0);
    assert_eq!(field(&out, "graph_attr_mb"), 64.0);
    assert_eq!(field(&out, "relaunched_mb"), 64.0);
    assert_eq!(field(&out, "trimmed_mb"), 0.0);
    assert_eq!(field(&out, "uploaded_mb"), 64.0);
    assert_eq!(field(&out, "destroyed_mb"), 64.0);
    assert_eq!(field(&out, "destroyed_trimmed_mb"), 0.0);
    assert_eq!(field(&out, "reused_mb"), 64.0);
    // Captured cudaMallocAsync/cudaFreeAsync and a host function are nodes.
    assert_eq!(field(&out, "captured_nodes"), 4.0);
    assert_eq!(field(&out, "captured_mb"), 0.0);
    assert_eq!(field(&out, "captured_launched_mb"), 32.0);
    assert_eq!(field(&out, "host_calls3"), 20.0);
    assert_eq!(field(&out, "end_mb"), 0.0);
    // Capture into an existing graph after e0; e1 added as a dependency.
    assert_eq!(field(&out, "capture_into_nodes"), 4.0);
    assert_eq!(field(&out, "last_deps"), 2.0);
    assert_eq!(field(&out, "e0_dependents"), 1.0);
    let ms = field(&out, "captured_into_ms");
    assert!((1.9..8.0).contains(&ms), "two 1 ms kernels took {ms} ms");
    // A user object's destructor runs when its last holder (the executable) goes.
    assert_eq!(field(&out, "destroyed_with_exec_alive"), 0.0);
    assert_eq!(field(&out, "destroyed_while_running"), 0.0);
    assert_eq!(field(&out, "destroyed_after_exec"), 1.0);
    assert_ledger_empty(&sim, 0);
}

fn share_prog() -> PathBuf {
    build_cuda(
        &cuda_src("share.cu"),
        &[&format!("-L{}", profile_dir().display()), "-lcuda"],
    )
}

#[test]
fn ipc_memory_and_events_are_shared_between_processes_and_memory_charged_once_to_its_owner() {
    let prog = share_prog();
    let sim = SimGpu::new();
    let mut cmd = sim.command(&prog);
    cmd.arg("ipc-export");
    let mut exp = Interactive::spawn(cmd);
    let handle = text_field(&exp.line(), "handle").to_string();
    assert_eq!(text_field(&exp.line(), "word"), "0x5a5a5a5a");
    let event = text_field(&exp.line(), "event").to_string();
    let out = sim.run_ok(&prog, &["ipc-import", &handle, &event]);
    assert_ok(&out);
    // The exporter's event: not reached while its 1.5 s kernel runs, then
    // waited for by the importer.
    assert!(out.contains("event_query=cudaErrorNotReady"), "{out}");
    assert!(out.contains("event_after_sync=cudaSuccess"), "{out}");
    // The importer sees the exporter's bytes, and the device holds the
    // memory once: 8 MiB, all charged to the exporter.
    assert!(out.contains("word=0x5a5a5a5a"), "{out}");
    assert_eq!(field(&out, "used_mb"), 8.0);
    // The importer's write is the exporter's memory.
    assert_eq!(text_field(&exp.ask("check"), "word"), "0x77777777");
    let snap = sim.monitor(0).snapshot();
    let mine: Vec<_> = snap.processes.iter().filter(|p| p.mem_used > 0).collect();
    assert_eq!(mine.len(), 1, "{snap:?}");
    assert_eq!(mine[0].pid, exp.pid());
    assert_eq!(text_field(&exp.ask("free"), "used_mb"), "0");
    assert!(exp.finish().success());
    // A stale handle (the exporter is gone) is refused, not a crash.
    let o = sim.run(&prog, &["ipc-import", &handle]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAIL"),
        "stale handle accepted"
    );
    assert_ledger_empty(&sim, 0);
}

#[test]
fn vmm_posix_fd_handles_are_imported_by_another_process_and_charged_once() {
    let prog = share_prog();
    let sim = SimGpu::new();
    let mut cmd = sim.command(&prog);
    cmd.arg("vmm-export");
    let mut exp = Interactive::spawn(cmd);
    let fd = text_field(&exp.line(), "fd").to_string();
    assert_eq!(text_field(&exp.line(), "used_mb"), "4");
    let pid = exp.pid().to_string();
    let out = sim.run_ok(&prog, &["vmm-import", &pid, &fd]);
    assert_ok(&out);
    assert!(out.contains("word=0x3c3c3c3c"), "{out}");
    // Imported, mapped: still 4 MiB on the device, none of it the importer's.
    assert_eq!(field(&out, "used_mb"), 4.0);
    assert!(out.contains("released used_mb=4"), "{out}");
    assert_eq!(text_field(&exp.ask("check"), "word"), "0x44444444");
    assert_eq!(text_field(&exp.ask("release"), "used_mb"), "0");
    assert!(exp.finish().success());
    assert_ledger_empty(&sim, 0);
}

#[test]
fn pool_allocations_are_exported_to_another_process_and_charged_once() {
    let prog = share_prog();
    let sim = SimGpu::new();
    let mut cmd = sim.command(&prog);
    cmd.arg("pool-export");
    let mut exp = Interactive::spawn(cmd);
    let fd = text_field(&exp.line(), "fd").to_string();
    let data = text_field(&exp.line(), "data").to_string();
    assert_eq!(text_field(&exp.line(), "used_mb"), "6");
    let pid = exp.pid().to_string();
    let out = sim.run_ok(&prog, &["pool-import", &pid, &fd, &data]);
    assert_ok(&out);
    assert!(out.contains("word=0x2b2b2b2b"), "{out}");
    assert_eq!(field(&out, "used_mb"), 6.0, "{out}");
    assert_eq!(text_field(&exp.ask("check"), "word"), "0x66666666");
    assert_eq!(text_field(&exp.ask("free"), "used_mb"), "0");
    assert!(exp.finish().success());
    assert_ledger_empty(&sim, 0);
}

#[test]
fn stream_memory_operations_wait_for_writes_from_another_stream() {
    let prog = share_prog();
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &["memops"]);
    assert_ok(&out);
    assert_eq!(field(&out, "batch_word"), 7.0, "{out}");
    // The stream waits (CUDA_ERROR_NOT_READY) until another stream writes
    // the awaited value; a 64-bit write lands whole.
    assert_eq!(field(&out, "query_waiting"), 600.0, "{out}");
    assert_eq!(field(&out, "query_after"), 0.0, "{out}");
    assert!(out.contains("word64=0x1122334455667788\n"), "{out}");
    assert_ledger_empty(&sim, 0);
}

#[test]
fn per_thread_default_stream_build() {
    let prog = build_cuda(&cuda_src("ptsz.cu"), &["--default-stream", "per-thread"]);
    let sim = SimGpu::new().env("SIMCUDA_LOG", "1");
    let o = sim.run(&prog, &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{out}\n{err}");
    assert_ok(&out);
    for t in ["t0_ms", "t1_ms"] {
        let ms = field(&out, t);
        // One context runs its work in order, so the other thread's kernels may sit in between.
        assert!((5.9..13.0).contains(&ms), "{t}: 3 x 2 ms took {ms} ms");
    }
    assert!(
        err.contains("cuLaunchKernel_ptsz -> CUDA_SUCCESS"),
        "per-thread launches expected in the trace"
    );
    assert!(
        err.contains("cuEventRecord_ptsz -> CUDA_SUCCESS"),
        "per-thread event records expected in the trace"
    );
    assert!(
        !err.contains("cuLaunchKernel -> "),
        "no legacy-stream launch expected"
    );
    assert_ledger_empty(&sim, 0);
}

#[test]
fn driver_api_lookup_versions_flags_and_legacy_alloc() {
    let prog = build_cuda(&cuda_src("driver_api.c"), &["-ldl"]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    let p = out
        .lines()
        .find_map(|l| l.strip_prefix("legacy_ptr=0x"))
        .expect("legacy_ptr");
    let p = u64::from_str_radix(p.trim(), 16).expect("hex");
    assert!(p != 0 && p < 1 << 32, "legacy cuMemAlloc returned {p:#x}");
    assert_ledger_empty(&sim, 0);
}

#[test]
fn program_linked_against_libcuda() {
    let lib = profile_dir();
    let prog = build_cuda(
        &cuda_src("sim_linked.c"),
        &[&format!("-L{}", lib.display()), "-lcuda"],
    );
    let sim = SimGpu::new().env("SIMCUDA_MEM", "40GiB");
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "driver"), 13050.0);
    assert_eq!(field(&out, "total"), (40u64 << 30) as f64);
    assert_ledger_empty(&sim, 0);
}

#[test]
fn forked_child_initializes_again() {
    let lib = profile_dir();
    let prog = build_cuda(
        &cuda_src("fork.c"),
        &[&format!("-L{}", lib.display()), "-lcuda"],
    );
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert!(out.contains("child ok"), "{out}");
    assert_ok(&out);
    let snap = sim.monitor(0).snapshot();
    assert_eq!(snap.mem_used, 0, "{snap:?}");
    assert!(
        snap.processes.len() >= 2,
        "parent and child both charged the ledger: {snap:?}"
    );
}

#[test]
fn driver_version_is_configurable() {
    let prog = build_cuda(
        &cuda_src("sim_linked.c"),
        &[&format!("-L{}", profile_dir().display()), "-lcuda"],
    );
    let sim = SimGpu::new().env("SIMCUDA_DRIVER_VERSION", "13020");
    let out = sim.run_ok(&prog, &[]);
    assert_eq!(field(&out, "driver"), 13020.0);
}

#[test]
fn globals_and_kernels_are_found_in_compressed_fatbins_too() {
    // zstd (what -compress-mode=size makes for cubins), LZ4 blocks
    // (-compress-mode=speed with every entry compressed), and plain.
    let lz4 = ["-compress-mode=speed", "-Xfatbin=-compress-all"];
    for args in [
        &["-compress-mode=size"][..],
        &lz4[..],
        &["-compress-mode=none"][..],
    ] {
        let prog = build_cuda(&cuda_src("symbols.cu"), args);
        let sim = SimGpu::new();
        let out = sim.run_ok(&prog, &[]);
        assert_ok(&out);
        assert_eq!(field(&out, "table_size"), 4000.0, "{args:?}");
    }
}

#[test]
fn cluster_occupancy_as_cublas_asks_it() {
    let prog = build_cuda(&cuda_src("clusters.cu"), &[]);
    let sim = SimGpu::new();
    let out = sim.run_ok(&prog, &[]);
    assert_ok(&out);
    assert_eq!(field(&out, "potential"), 8.0, "portable clusters: 8 blocks");
    assert_eq!(field(&out, "potential_nonportable"), 16.0);
    // 256-thread blocks: 8 per SM; 132 SMs in GPCs of 18 (and one of 6).
    assert_eq!(field(&out, "active_2"), (7.0 * (18.0 * 8.0 / 2.0)) + 24.0);
    assert_eq!(field(&out, "active_16"), 7.0 * 9.0 + 3.0);
}

/// The entry points the real CUDA runtime looks up that the simulated
/// driver does not implement, as the runtime itself asks for them; kept in
/// `simcuda/MISSING.txt`. A runtime that asks for a new one, or a driver
/// that implements one on the list, fails here until the list says so: a
/// gap is found by CI, not by a user.
#[test]
fn the_runtimes_missing_entry_points_are_the_known_ones() {
    let prog = build_cuda(&cuda_src("hello.cu"), &[]);
    let sim = SimGpu::new().env("SIMCUDA_LOG", "1");
    let out = sim.run(&prog, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let asked: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.ends_with("): not implemented"))
        .filter_map(|l| l.split("cuGetProcAddress(").nth(1)?.split(',').next())
        // (The runtime also looks up an empty name.)
        .filter(|n| !n.is_empty())
        .collect();
    let path = tslice_tests::repo_root().join("simcuda/MISSING.txt");
    if std::env::var_os("TSLICE_BLESS").is_some() {
        // Rewrites the list (review the diff before committing it).
        let mut text = String::from(
            "# Entry points the real CUDA runtime looks up that the simulated driver does not\n\
             # implement (regenerate: TSLICE_BLESS=1 cargo test -p tslice-tests --test simcuda missing).\n",
        );
        for n in &asked {
            text.push_str(n);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let known: std::collections::BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let new: Vec<&&str> = asked.difference(&known).collect();
    let done: Vec<&&str> = known.difference(&asked).collect();
    assert!(
        new.is_empty() && done.is_empty(),
        "the runtime asks for entry points the simulated driver lacks that {} does not list: {new:?}; \
         listed but implemented now (or no longer asked for): {done:?}",
        path.display()
    );
    assert!(
        !asked.is_empty(),
        "the runtime's lookups were not seen (SIMCUDA_LOG)"
    );
}

#[test]
fn peer_access_profiler_and_stream_attributes() {
    let prog = build_cuda(&cuda_src("peers.cu"), &[]);
    let sim = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB");
    assert_ok(&sim.run_ok(&prog, &[]));
}

#[test]
fn the_simulated_nvml_reports_what_the_driver_did() {
    let libdir = format!("-L{}", profile_dir().display());
    let prog = build_cuda(&cuda_src("nvml.c"), &[&libdir, "-lcuda", "-lnvidia_ml"]);
    let sim = SimGpu::new()
        .env("SIMCUDA_DEVICES", "2")
        .env("SIMCUDA_MEM", "16GiB");
    let out = sim.run_ok(&prog, &["300"]);
    assert_ok(&out);
    assert_eq!(field(&out, "count"), 2.0);
    // 300 MiB in 2 MiB pages, charged to this process alone.
    assert_eq!(field(&out, "dev0_mine"), 300.0 * MIB);
    assert_eq!(field(&out, "dev0_used"), 300.0 * MIB);
    assert_eq!(field(&out, "dev0_processes"), 1.0);
    assert!(
        out.contains("name=NVIDIA H100 80GB HBM3 (simulated)"),
        "{out}"
    );
    assert!(
        out.contains("bus=00000000:26:00.0"),
        "device 1's PCI bus id: {out}"
    );
}

#[test]
fn nvidia_ml_py_reads_the_simulated_nvml() {
    let sim = SimGpu::new();
    // A CUDA process holding memory, alive while NVML is read.
    let mut holder = tslice_tests::Interactive::spawn({
        let mut c = sim.command(&tslice_tests::tenant_prog());
        c.args(["grab", "256", "64"]);
        c
    });
    assert_eq!(field(&holder.line(), "held"), 256.0 * MIB);
    let python = tslice_tests::cuda_home()
        .ancestors()
        .find(|p| p.join("bin/python").exists())
        .expect("the toolkit's venv")
        .join("bin/python");
    let mut c = sim.command(&python);
    c.arg(tslice_tests::repo_root().join("tests/cuda/nvml_check.py"));
    let out = c.output().expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ok(&text);
    assert!(
        text.contains("dev0 name=NVIDIA H100 80GB HBM3 (simulated)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("dev0 pid={} mem={}", holder.pid(), 256u64 << 20)),
        "the holder and its memory: {text}"
    );
    assert_eq!(field(&text, "used"), 256.0 * MIB);
    assert!(holder.finish().success());
}

#[test]
fn modules_from_files_block_size_search_and_texture_objects_for_lcuda_programs() {
    let libdir = format!("-L{}", profile_dir().display());
    let prog = build_cuda(&cuda_src("modfile.c"), &[&libdir, "-lcuda"]);
    let dir = profile_dir().parent().unwrap().join("cuda-progs");
    let nvcc = tslice_tests::cuda_home().join("bin/nvcc");
    for kind in ["-cubin", "-fatbin"] {
        let file = dir.join(format!("kern{kind}.bin"));
        let st = std::process::Command::new(&nvcc)
            .args(["-arch=sm_90", kind, "-o"])
            .arg(&file)
            .arg(cuda_src("kern.cu"))
            .status()
            .unwrap();
        assert!(st.success());
        let sim = SimGpu::new();
        let out = sim.run_ok(&prog, &[file.to_str().unwrap()]);
        assert_ok(&out);
        assert_eq!(field(&out, "global_size"), 1024.0, "{kind}");
        assert_eq!(
            field(&out, "block"),
            1024.0,
            "no shared memory: the largest block fills an SM"
        );
        assert!(out.contains("sizes=144,104,112"), "{out}");
    }
}

#[test]
fn copies_to_and_from_arrays_span_rows_and_slices() {
    let prog = build_cuda(&cuda_src("arrays.cu"), &[]);
    let sim = SimGpu::new();
    assert_ok(&sim.run_ok(&prog, &[]));
    assert_ledger_empty(&sim, 0);
}

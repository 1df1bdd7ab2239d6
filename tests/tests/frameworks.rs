//! Real frameworks under the shim on the simulated GPU: PyTorch 2.15
//! (CUDA 13.2) and CuPy 14 as pip installs them, unmodified, with the pinned
//! versions of scripts/setup-frameworks.sh (these tests fail, never skip,
//! when it has not run). The Python halves (tests/frameworks/*.py) report
//! what the programs saw; the assertions here are on what the shim
//! promises: the cap as the device's size in the driver API and NVML, a
//! clean out-of-memory error past it after which the program carries on,
//! memory given back, and a compute limit held by the device's own record.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use tslice_tests::{repo_root, shim, SimGpu};

const GIB: u64 = 1 << 30;

/// The frameworks' Python (from .frameworks/env).
fn python() -> PathBuf {
    let env = repo_root().join(".frameworks/env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/setup-frameworks.sh (the test command does)",
            env.display()
        )
    });
    let py = text
        .lines()
        .find_map(|l| l.strip_prefix("FRAMEWORKS_PYTHON="))
        .expect("FRAMEWORKS_PYTHON in .frameworks/env");
    PathBuf::from(py.trim())
}

fn script(name: &str) -> String {
    repo_root()
        .join("tests/frameworks")
        .join(name)
        .display()
        .to_string()
}

/// Runs a check script on `gpu` and returns its JSON report.
fn run(gpu: &SimGpu, envs: &[(&str, &str)], args: &[&str]) -> Value {
    let mut c: Command = gpu.command(&python());
    // The frameworks bring their own CUDA libraries (the wheels' RUNPATH);
    // only the simulated driver and NVML come from the test's directory.
    c.env("LD_LIBRARY_PATH", gpu.lib_dir());
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.args(args).output().expect("start python");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{args:?} failed ({}):\n{stdout}\n{stderr}",
        o.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}\n{stderr}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The memory promises, for one allocator configuration.
fn torch_memory(alloc_conf: &str) {
    let gpu = SimGpu::new()
        .preload(&shim())
        .env("TSLICE_HBM_LIMIT", "4GiB");
    let r = run(
        &gpu,
        &[("PYTORCH_CUDA_ALLOC_CONF", alloc_conf)],
        &[&script("torch_check.py"), "memory"],
    );
    // The cap is the device's size, in the driver API and in NVML.
    assert_eq!(r["mem_get_info"][1].as_u64(), Some(4 * GIB), "{r}");
    assert_eq!(u(&r, "device_total"), 4 * GIB, "{r}");
    assert_eq!(u(&r, "nvml_total"), 4 * GIB, "{r}");
    assert_eq!(u(&r, "filled"), 3 * GIB, "{r}");
    // NVML's free memory is the driver API's, and its process list is this
    // process with what it holds.
    assert_eq!(u(&r, "nvml_free"), u(&r, "free_when_filled"), "{r}");
    assert!(u(&r, "free_when_filled") <= GIB, "{r}");
    let procs = r["nvml_processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{r}");
    assert_eq!(procs[0][0].as_u64(), Some(u(&r, "pid")), "{r}");
    assert!(procs[0][1].as_u64().unwrap() >= 3 * GIB, "{r}");
    // Past the cap: PyTorch's own out-of-memory error, naming the cap.
    assert_eq!(r["oom"].as_str(), Some("OutOfMemoryError"), "{r}");
    let msg = r["oom_message"].as_str().unwrap();
    assert!(msg.contains("total capacity of 4.00 GiB"), "{msg}");
    // The process carried on, gave everything back, and could fill the cap again.
    assert_eq!(u(&r, "after_oom_alloc"), 256 << 20, "{r}");
    assert_eq!(u(&r, "after_release_free"), 4 * GIB, "{r}");
    assert_eq!(u(&r, "refill"), 3 * GIB, "{r}");
    // The device's ledger: the process is gone and holds nothing.
    assert_eq!(gpu.monitor(0).snapshot().mem_used, 0);
}

#[test]
fn torch_sees_the_cap_gets_a_clean_oom_and_carries_on() {
    torch_memory("");
}

#[test]
fn torch_expandable_segments_vmm_is_capped_the_same_way() {
    torch_memory("expandable_segments:True");
}

/// The share of device time the run's replay loop got, by the device's record.
fn torch_compute_share(gpu: &SimGpu, limit: &str) -> (f64, Value) {
    let r = run(
        gpu,
        &[
            ("TSLICE_COMPUTE_LIMIT", limit),
            ("SIMCUDA_KERNEL_US", "200"),
        ],
        &[&script("torch_check.py"), "compute", "2"],
    );
    assert_eq!(r["matmul_shape"], serde_json::json!([512, 512]), "{r}");
    assert!(u(&r, "replays") > 0, "{r}");
    let (from, to) = (u(&r, "start_ns"), u(&r, "end_ns"));
    let busy = gpu.monitor(0).busy_between(u(&r, "pid") as u32, from, to);
    (busy as f64 / (to - from) as f64, r)
}

#[test]
fn torch_matmul_and_cuda_graph_replay_are_held_to_the_compute_limit() {
    let gpu = SimGpu::new().preload(&shim());
    let (capped, r) = torch_compute_share(&gpu, "30%");
    assert!(
        capped <= 0.30 * 1.15,
        "share {capped:.3} over the 30% limit: {r}"
    );
    assert!(
        capped >= 0.30 * 0.6,
        "share {capped:.3} far below the 30% limit: {r}"
    );
    // The same program without a limit takes far more of the device.
    let (free, r) = torch_compute_share(&gpu, "100%");
    assert!(
        free > capped * 1.6,
        "unlimited {free:.3} vs capped {capped:.3}: {r}"
    );
}

#[test]
fn cupy_memory_pool_sees_the_cap_gets_a_clean_oom_and_carries_on() {
    let gpu = SimGpu::new()
        .preload(&shim())
        .env("TSLICE_HBM_LIMIT", "4GiB");
    let r = run(&gpu, &[], &[&script("cupy_check.py")]);
    assert_eq!(r["mem_get_info"][1].as_u64(), Some(4 * GIB), "{r}");
    assert_eq!(u(&r, "filled"), 3 * GIB, "{r}");
    assert_eq!(r["oom"].as_str(), Some("OutOfMemoryError"), "{r}");
    // A kernel CuPy compiles at run time (NVRTC) ran after the error.
    assert_eq!(u(&r, "after_oom_elems"), 1 << 20, "{r}");
    assert_eq!(u(&r, "after_release_free"), 4 * GIB, "{r}");
    assert_eq!(gpu.monitor(0).snapshot().mem_used, 0);
}

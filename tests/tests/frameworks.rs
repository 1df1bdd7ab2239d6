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
use tslice_tests::{repo_root, setup_path, shim, SimGpu};

const GIB: u64 = 1 << 30;

/// The frameworks' Python (from .frameworks/env).
fn python() -> PathBuf {
    setup_path(
        ".frameworks/env",
        "FRAMEWORKS_PYTHON",
        "setup-frameworks.sh",
    )
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

#[test]
fn torch_multiprocessing_shares_a_cuda_tensor_charged_once_to_its_owner() {
    use std::io::{BufRead, Write};
    let gpu = SimGpu::new()
        .preload(&shim())
        .env("TSLICE_HBM_LIMIT", "4GiB");
    let mut c: Command = gpu.command(&python());
    c.env("LD_LIBRARY_PATH", gpu.lib_dir())
        .arg(script("torch_ipc.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("start python");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(240))
            .expect("the producer printed nothing for 240 s");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    let r = next();
    // The consumer read the producer's bytes through the IPC mapping...
    assert_eq!(r["device"].as_str(), Some("cuda"), "{r}");
    assert_eq!(r["head"], serde_json::json!([0.0, 1.0, 2.0, 3.0]), "{r}");
    assert_eq!(r["tail"], serde_json::json!([8388606.0, 8388607.0]), "{r}");
    // ...with a 16 MiB cap, none of it charged to it, while it holds the
    // producer's 32 MiB block open.
    assert_eq!(u(&r, "total"), 16 << 20, "{r}");
    assert_eq!(u(&r, "free"), 16 << 20, "{r}");
    // The device holds the block once, for the producer.
    let snap = gpu.monitor(0).snapshot();
    let by = |pid: u64| {
        snap.processes
            .iter()
            .filter(|p| u64::from(p.pid) == pid && p.alive)
            .map(|p| p.mem_used)
            .sum::<u64>()
    };
    assert_eq!(by(u(&r, "pid")), 0, "{snap:?}");
    assert_eq!(
        by(u(&r, "producer_pid")),
        u(&r, "producer_reserved"),
        "{snap:?}"
    );
    assert_eq!(snap.mem_used, u(&r, "producer_reserved"), "{snap:?}");
    writeln!(stdin).unwrap();
    let r2 = next();
    assert_eq!(r2["consumer_exit"].as_i64(), Some(0), "{r2}");
    assert_eq!(u(&r2, "producer_free_after"), 4 * GIB, "{r2}");
    assert!(child.wait().unwrap().success());
    assert_eq!(gpu.monitor(0).snapshot().mem_used, 0);
}

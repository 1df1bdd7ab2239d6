"""PyTorch under tslice on the simulated GPU: what the shim promises.

Run by tests/tests/frameworks.rs with the shim preloaded and a memory cap
(TSLICE_HBM_LIMIT); prints one JSON object of observations, which the Rust
test asserts on. Kernels do not compute on the simulated GPU, so nothing
here looks at numbers a kernel would produce: only at caps, errors, and
whether the work ran.

usage: torch_check.py memory        caps, OOM and recovery (honours PYTORCH_CUDA_ALLOC_CONF)
       torch_check.py compute SECS  matmuls and a CUDA graph replayed for SECS seconds
"""
import json
import os
import sys
import time

import torch

GiB = 1 << 30


def memory():
    out = {"alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    free, total = torch.cuda.mem_get_info()
    out["mem_get_info"] = [free, total]
    out["device_total"] = torch.cuda.get_device_properties(0).total_memory
    # Fill to just under the cap; NVML agrees with the driver API.
    keep = torch.empty(total - GiB, dtype=torch.uint8, device="cuda")
    out["filled"] = keep.numel()
    out["free_when_filled"] = torch.cuda.mem_get_info()[0]
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    out["nvml_total"] = m.total
    out["nvml_free"] = m.free
    out["nvml_processes"] = [
        [p.pid, p.usedGpuMemory]
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    ]
    out["pid"] = os.getpid()
    # Past the cap.
    try:
        torch.empty(2 * GiB, dtype=torch.uint8, device="cuda")
        out["oom"] = None
    except torch.OutOfMemoryError as e:
        out["oom"] = type(e).__name__
        out["oom_message"] = str(e).splitlines()[0]
    # The process carries on: smaller allocations and kernels still work.
    small = torch.ones(256 << 20, dtype=torch.uint8, device="cuda")
    small.add_(1)
    torch.cuda.synchronize()
    out["after_oom_alloc"] = small.numel()
    del keep, small
    torch.cuda.empty_cache()
    out["after_release_free"] = torch.cuda.mem_get_info()[0]
    # Memory comes back: the whole cap can be used again.
    again = torch.empty(total - GiB, dtype=torch.uint8, device="cuda")
    out["refill"] = again.numel()
    del again
    torch.cuda.empty_cache()
    print(json.dumps(out))


def compute(secs):
    out = {}
    a = torch.randn(512, 512, device="cuda")
    b = a @ a
    torch.cuda.synchronize()
    out["matmul_shape"] = list(b.shape)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            y = torch.relu(a @ a + 1)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = torch.relu(a @ a + 1)
    torch.cuda.synchronize()
    replays = 0
    out["start_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    start = time.monotonic()
    while time.monotonic() - start < secs:
        for _ in range(10):
            g.replay()
        replays += 10
        torch.cuda.synchronize()
    out["replays"] = replays
    out["end_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    out["pid"] = os.getpid()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "memory":
        memory()
    elif sys.argv[1] == "compute":
        compute(float(sys.argv[2]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}; accepted: memory, compute SECS")

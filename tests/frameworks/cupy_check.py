"""CuPy under tslice on the simulated GPU: its memory pool against the cap.

Run by tests/tests/frameworks.rs with the shim preloaded and a memory cap;
prints one JSON object of observations for the Rust test to assert on.
"""
import json

import cupy

GiB = 1 << 30


def main():
    out = {}
    free, total = cupy.cuda.runtime.memGetInfo()
    out["mem_get_info"] = [free, total]
    pool = cupy.get_default_memory_pool()
    keep = cupy.empty(total - GiB, dtype=cupy.uint8)
    out["filled"] = keep.nbytes
    out["pool_used"] = pool.used_bytes()
    try:
        cupy.empty(2 * GiB, dtype=cupy.uint8)
        out["oom"] = None
    except cupy.cuda.memory.OutOfMemoryError as e:
        out["oom"] = type(e).__name__
        out["oom_message"] = str(e)
    # Carries on: an elementwise kernel (compiled at run time) and a reduction.
    x = cupy.arange(1 << 20, dtype=cupy.float32)
    y = x * 2 + 1
    s = y.sum()
    cupy.cuda.Device().synchronize()
    out["after_oom_elems"] = int(y.size)
    out["sum_type"] = str(s.dtype)
    del keep, x, y, s
    pool.free_all_blocks()
    out["after_release_free"] = cupy.cuda.runtime.memGetInfo()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()

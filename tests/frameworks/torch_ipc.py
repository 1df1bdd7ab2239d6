"""A CUDA tensor shared between two PyTorch processes (torch.multiprocessing,
CUDA IPC: memory and event handles), under tslice.

The producer runs with the memory cap of its environment; the consumer is
started with TSLICE_HBM_LIMIT=16MiB, smaller than the shared block: it can
only open the tensor because imported memory is charged to its owner, not
to the importer. Tensor data is made on the host and copied (the simulated
GPU does not run kernels), so the values the consumer reads back are real.
Prints one JSON object.
"""
import json
import os

import torch
import torch.multiprocessing as mp


def consumer(q, out):
    t = q.get()
    free, total = torch.cuda.mem_get_info()
    out.put(
        {
            "pid": os.getpid(),
            "device": t.device.type,
            "head": t[:4].cpu().tolist(),
            "tail": t[-2:].cpu().tolist(),
            "free": free,
            "total": total,
        }
    )
    del t
    q.get()  # hold the tensor until the producer has looked at the device


def main():
    mp.set_start_method("spawn")
    n = 8 << 20  # 32 MiB of float32
    t = torch.arange(n, dtype=torch.float32).cuda()
    q, out = mp.Queue(), mp.Queue()
    os.environ["TSLICE_HBM_LIMIT"] = "16MiB"
    p = mp.Process(target=consumer, args=(q, out))
    p.start()
    q.put(t)
    res = out.get(timeout=120)
    res["producer_pid"] = os.getpid()
    res["producer_reserved"] = torch.cuda.memory_reserved()
    print(json.dumps(res), flush=True)
    input()  # the test reads the device's ledger, then says go on
    q.put("done")
    p.join(timeout=120)
    res2 = {"consumer_exit": p.exitcode}
    del t
    torch.cuda.empty_cache()
    res2["producer_free_after"] = torch.cuda.mem_get_info()[0]
    print(json.dumps(res2), flush=True)


if __name__ == "__main__":
    main()

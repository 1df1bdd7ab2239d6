"""nvidia-ml-py (pynvml) against the simulated NVML, as tools and PyTorch
use it: prints one line per device and one per process."""
import pynvml

pynvml.nvmlInit()
print("driver=%s" % pynvml.nvmlSystemGetDriverVersion())
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    m2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    assert (m.total, m.used) == (m2.total, m2.used), (m, m2)
    u = pynvml.nvmlDeviceGetUtilizationRates(h)
    print("dev%d name=%s uuid=%s total=%d used=%d util=%d" % (
        i, pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetUUID(h), m.total, m.used, u.gpu))
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
        print("dev%d pid=%d mem=%d" % (i, p.pid, p.usedGpuMemory))
pynvml.nvmlShutdown()
print("OK FAILS=0")

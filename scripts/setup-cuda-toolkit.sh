#!/usr/bin/env bash
# Installs NVIDIA's CUDA toolkit packages from PyPI (nvcc, the runtime, headers,
# nvml.h, nvidia-ml-py)
# into .cuda/ at the repository root, at pinned versions, so that CUDA programs
# can be built and run on the simulated driver of a machine without a GPU.
# Idempotent: does nothing when the pinned versions are already there.
#
# Afterwards .cuda/env holds:  CUDA_HOME=<dir with bin/nvcc, include/, lib/libcudart.so.13>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cuda"
# Pinned: bump together, and re-run the tests.
pins=(
  nvidia-cuda-nvcc==13.5.37
  nvidia-cuda-runtime==13.5.37
  nvidia-cuda-crt==13.5.37
  nvidia-nvvm==13.5.37
  nvidia-cuda-cccl==13.3.5.0.6
  # nvml.h, for the programs that test the simulated NVML (and the shim's
  # NVML hooks); nvidia-ml-py, the Python binding tools and PyTorch use.
  nvidia-nvml-dev==13.5.37
  nvidia-ml-py==13.615.71
)
stamp="$dest/installed-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && -f "$dest/env" ]]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup-cuda-toolkit: $python not found; install Python 3.9+ with venv" >&2; exit 1; }
rm -rf "$dest"
"$python" -m venv "$dest/venv"
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
cu=$("$dest/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
[[ -x "$cu/bin/nvcc" && -f "$cu/lib/libcudart.so.13" && -f "$cu/include/cuda.h" ]] || {
  echo "setup-cuda-toolkit: the packages installed but $cu lacks nvcc, libcudart.so.13 or cuda.h" >&2; exit 1; }
ln -sf libcudart.so.13 "$cu/lib/libcudart.so"
echo "CUDA_HOME=$cu" > "$dest/env"
touch "$stamp"
echo "setup-cuda-toolkit: CUDA toolkit ready in $cu"

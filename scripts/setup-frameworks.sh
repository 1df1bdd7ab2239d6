#!/usr/bin/env bash
# Installs the real ML frameworks the framework tests run under the shim on the
# simulated GPU: PyTorch and CuPy from PyPI, at pinned versions, into
# .frameworks/venv at the repository root (ignored by git). About 6 GB
# installed (PyTorch brings cuBLAS, cuDNN, NCCL...). Idempotent: does nothing
# when the pinned versions are already there. pip's wheel cache (~/.cache/pip)
# makes a reinstall (a fresh clone) a local unpack instead of a download.
#
# Afterwards .frameworks/env holds:  FRAMEWORKS_PYTHON=<the venv's python>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.frameworks"
# Pinned: bump together, and re-run tests/tests/frameworks.rs.
pins=(
  torch==2.15.0
  cupy-cuda13x==14.2.0
  numpy==2.3.5
  nvidia-ml-py==13.615.71
)
stamp="$dest/installed-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && -f "$dest/env" ]]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup-frameworks: $python not found; install Python 3.9+ with venv" >&2; exit 1; }
echo "setup-frameworks: installing ${pins[*]} into $dest (once; about 6 GB)" >&2
rm -rf "$dest"
"$python" -m venv "$dest/venv"
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
"$dest/venv/bin/python" -c 'import torch, cupy, pynvml' || {
  echo "setup-frameworks: the packages installed but do not import" >&2; exit 1; }
echo "FRAMEWORKS_PYTHON=$dest/venv/bin/python" > "$dest/env"
touch "$stamp"
echo "setup-frameworks: torch and cupy ready in $dest/venv"

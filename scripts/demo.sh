#!/usr/bin/env bash
# The main job, on a machine without a GPU: builds tslice and runs real CUDA
# programs through NVIDIA's CUDA runtime on the simulated driver (an 80 GB
# H100 that every process on this machine shares), first as plain
# time-slicing would, then under tslice:
#   1. memory: a tenant capped at 8 GiB sees an 8 GiB GPU; an allocation that
#      fits succeeds and one that does not is refused with the normal
#      out-of-memory error;
#   2. compute: two saturating tenants capped at 20% and 70% of GPU time get
#      those shares, as measured by the simulated GPU itself (the remaining
#      10% leaves room for the context switches time-slicing costs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/setup-cuda-toolkit.sh
source .cuda/env
echo "== building tslice (release)"
cargo build --release --locked -p tslice-shim -p simcuda -p simnvml -p simgpu 2>&1 | grep -vE '^\s+(Compiling|Finished|Blocking)' || true
work=$(mktemp -d /tmp/tslice-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib" "$work/gpu"
ln -s "$root/target/release/libcuda.so" "$work/lib/libcuda.so.1"
ln -s "$root/target/release/libnvidia_ml.so" "$work/lib/libnvidia-ml.so.1"
nvcc() { "$CUDA_HOME/bin/nvcc" -arch=sm_90 -cudart shared -I"$CUDA_HOME/include" -L"$CUDA_HOME/lib" "$@"; }
nvcc -o "$work/tenant" examples/tenant.cu
nvcc -o "$work/spin" tests/cuda/spin_loop.cu
export LD_LIBRARY_PATH="$work/lib:$CUDA_HOME/lib" SIMCUDA_DIR="$work/gpu" SIMCUDA_MEM=80GiB
shim="$root/target/release/libtslice.so"

echo
echo "== memory: a tenant allocates 6 GiB, then 4 GiB more"
echo "-- plain time-slicing (no tslice): the tenant sees the whole GPU"
"$work/tenant" 6 4
echo "-- under tslice, TSLICE_HBM_LIMIT=8GiB (LD_PRELOAD=libtslice.so)"
LD_PRELOAD="$shim" TSLICE_HBM_LIMIT=8GiB "$work/tenant" 6 4

echo
echo "== compute: two saturating tenants (200 us kernels) for 3 s"
shares() {  # prints each tenant's share of GPU time in its steady state, from the simulated GPU's record
  local from=$(( $(max_start "$@") + 500000000 )) to=$(( $(min_end "$@") - 100000000 ))
  for f in "$@"; do
    pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' "$f") limit=$(sed -n 's/^limit=//p' "$f")
    busy=$("$root/target/release/simgpu" busy --pid "$pid" --from $from --to $to --dir "$work/gpu" | sed -n 's/.*"busy_ns":\([0-9]*\).*/\1/p')
    printf "  tenant %-6s limit %-5s got %5.1f%% of the GPU\n" "$pid" "${limit:-none}" "$(awk -v b="$busy" -v w=$((to-from)) 'BEGIN { print 100*b/w }')"
  done
}
max_start() { for f in "$@"; do sed -n 's/.*t_start=\([0-9]*\).*/\1/p' "$f"; done | sort -n | tail -1; }
min_end() { for f in "$@"; do sed -n 's/^t_end=\([0-9]*\).*/\1/p' "$f"; done | sort -n | head -1; }
run_pair() {  # run_pair LIMIT_A LIMIT_B
  local i=0
  for l in "$@"; do
    i=$((i+1)); out="$work/t$i.out"; echo "limit=$l" > "$out"
    if [[ $l == none ]]; then "$work/spin" kernels 200 3 >> "$out" &
    else LD_PRELOAD="$shim" TSLICE_COMPUTE_LIMIT=$l "$work/spin" kernels 200 3 >> "$out" & fi
  done
  wait
  shares "$work"/t1.out "$work"/t2.out
}
echo "-- plain time-slicing: both get about half (less the context switches)"
run_pair none none
echo "-- under tslice, TSLICE_COMPUTE_LIMIT=20% and 70%"
run_pair 20% 70%

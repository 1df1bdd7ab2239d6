#!/usr/bin/env bash
# Runs every test of the project on this machine (no GPU needed):
#   1. installs the pinned CUDA toolkit from PyPI into .cuda/ (once);
#   2. builds the workspace (the shim and the simulated driver are shared
#      libraries the integration tests load into real CUDA programs);
#   3. checks formatting (rustfmt) and lints (clippy, warnings are errors);
#   4. runs all tests: unit tests, the shim's interposition tests, the
#      simulated GPU's multi-process tests, the CUDA programs under the
#      shim on the simulated driver (memory caps, compute shares, latency),
#      and the node broker with real cgroups and processes;
#   5. fuzzes the broker's wire decoder for FUZZ_SECONDS (default 30).
# Tests that need the toolkit fail (never skip) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-cuda-toolkit.sh
cargo fmt --all --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
scripts/fuzz.sh

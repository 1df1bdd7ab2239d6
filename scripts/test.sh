#!/usr/bin/env bash
# Runs every test of the project on this machine (no GPU needed):
#   1. installs the pinned CUDA toolkit from PyPI into .cuda/ (once), and
#      builds etcd, kube-apiserver and helm from their pinned Go modules into
#      .k8s/ (once) for the Kubernetes tests (a real API server, no cluster);
#   2. builds the workspace (the shim and the simulated driver are shared
#      libraries the integration tests load into real CUDA programs);
#   3. checks formatting (rustfmt) and lints (clippy, warnings are errors);
#   4. runs all tests: unit tests, the shim's interposition tests, the
#      simulated GPU's multi-process tests, the CUDA programs under the
#      shim on the simulated driver (memory caps, compute shares, latency),
#      the node broker with real cgroups and processes, and the broker on
#      Kubernetes against a real API server;
#   5. fuzzes the broker's wire decoder for FUZZ_SECONDS (default 30).
# Tests that need the toolkit fail (never skip) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-cuda-toolkit.sh
scripts/setup-k8s-testbin.sh
scripts/setup-frameworks.sh
cargo fmt --all --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
scripts/fuzz.sh

#!/usr/bin/env bash
# Fuzzes the broker's wire decoder (fuzz/fuzz_targets/decode.rs) for a
# bounded time: FUZZ_SECONDS (default 30). cargo-fuzz is installed once into
# .tools/ (pinned); libFuzzer needs a nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1 when no nightly is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-30}
tools="$root/.tools"
if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
  cargo install --quiet --locked --root "$tools" cargo-fuzz@0.13.1
fi
export PATH="$tools/bin:$PATH"
cd "$root"
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
corpus="$root/target/fuzz-corpus/decode"
mkdir -p "$corpus"
cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz decode "$corpus" -- -max_total_time="$seconds" -max_len=70000

#!/usr/bin/env bash
# Runs every fuzz target for a bounded time from its committed seeds (fuzz/seeds/<target>), on a scratch
# corpus (nothing in the repository changes). Fails on the first crash, timeout or leak, leaving the input
# in fuzz/artifacts/<target>/ and printing how to replay it. Needs cargo-fuzz (.ci/install) and runs on a
# stable compiler: RUSTC_BOOTSTRAP=1, no sanitizer. The build is `--dev` (quick to build, slower to run: CI's
# smoke run); FUZZ_RELEASE=1 builds optimized for long runs.
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^beowulf-fuzz$')
fi
export RUSTC_BOOTSTRAP=1
profile=(--dev)
[ -z "${FUZZ_RELEASE:-}" ] || profile=()
cargo fuzz build "${profile[@]}" --sanitizer none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  if ! cargo fuzz run "${profile[@]}" --sanitizer none "$t" "$scratch/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t failed; replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none $t fuzz/artifacts/$t/<file>" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  echo "fuzz $t: ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "$scratch/$t" | wc -l) inputs, no crash"
done

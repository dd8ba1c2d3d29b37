#!/usr/bin/env bash
# Runs every fuzz target from its committed seeds (fuzz/seeds/<target>) on a scratch corpus (nothing in the
# repository changes). Fails on the first crash, timeout or memory blow-up, leaving the input in
# fuzz/artifacts/<target>/ and printing how to replay it. Needs cargo-fuzz (.ci/install); runs on the stable
# compiler (RUSTC_BOOTSTRAP=1, no sanitizer).
#
#   fuzz/run.sh                       CI's gate: a fixed seed and a fixed number of inputs per target, on a
#                                     `--dev` build: the same amount of fuzzing on every machine, however fast
#                                     (hash maps' random order still varies coverage feedback slightly)
#   fuzz/run.sh SECONDS [TARGET...]   exploration: each target for SECONDS from a random seed on an optimized
#                                     build; what it finds becomes a regression test and a seed
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
if (($# == 0)); then
  profile=(--dev)
  limits=(-seed=1 -runs="${FUZZ_RUNS:-200000}")
else
  profile=()
  limits=(-max_total_time="$1")
  shift
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^beowulf-fuzz$')
fi
cargo fuzz build "${profile[@]}" --sanitizer none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  start=$(date +%s)
  if ! cargo fuzz run "${profile[@]}" --sanitizer none "$t" "$scratch/$t" "seeds/$t" -- \
      "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -n 40
    echo "fuzz target $t failed; replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${profile[*]} --sanitizer none $t artifacts/$t/<file>)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  echo "fuzz $t: ${runs:-?} inputs in $(( $(date +%s) - start ))s, ${cov:-cov: ?}, corpus $(ls "$scratch/$t" | wc -l), no crash"
done

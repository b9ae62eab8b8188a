#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a while, then prints per target the runs,
# runs per second, coverage and crashes. Used by `make fuzz` and `make fuzz-smoke`.
#
#   fuzz/run.sh SECONDS [TARGET...]      (default: every target in fuzz/Cargo.toml)
#
# Needs the nightly toolchain (rustup toolchain list) and cargo-fuzz; cargo-fuzz is installed
# from crates.io with `cargo install cargo-fuzz` when missing (~1.5 min once).
# Each target runs niced, in one process (-jobs=1 -workers=1: the machine is shared), on a
# scratch corpus in fuzz/target/corpus/<target> seeded from the committed fuzz/corpus/<target>.
# Crash inputs land in fuzz/artifacts/<target>/; the script then exits 1.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^hull-fuzz$')
fi

say() { echo "fuzz: $*"; }

if ! rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
  say "the nightly Rust toolchain is missing (rustup toolchain list shows none); cargo fuzz needs it."
  say "install it with: rustup toolchain install nightly"
  exit 1
fi
if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
  say "cargo-fuzz is missing: installing it from crates.io (cargo install cargo-fuzz, ~1.5 min once)"
  nice -n 10 cargo install cargo-fuzz
fi

# The build goes to a cache that outlives a clone (like the guest kernel's under $HULL_CACHE):
# a cold build of the targets takes ~10-14 min on 2 cores, a rebuild after Hull changes ~3.5 min.
build_dir=${FUZZ_BUILD_DIR:-}
if [ -z "$build_dir" ]; then
  cache=${HULL_CACHE:-/var/cache/hull}
  if mkdir -p "$cache/fuzz-target" 2> /dev/null && [ -w "$cache/fuzz-target" ]; then
    build_dir="$cache/fuzz-target"
  else
    build_dir="$(pwd)/target"
  fi
fi
start=$(date +%s)
say "building the targets (nightly, ASan, release + debug assertions) in $build_dir"
nice -n 10 cargo +nightly fuzz build --target-dir "$build_dir"
say "build took $(( $(date +%s) - start )) s"

fuzz_dir=$(pwd)
failed=()
summary=()
for t in "${targets[@]}"; do
  # -jobs=1 runs the fuzzer in one child process whose own log is fuzz-0.log in the working
  # directory: give each target its own.
  mkdir -p "target/corpus/$t" "artifacts/$t" "target/logs/$t"
  log="target/logs/$t.log"
  say "running $t for ${seconds} s (log: fuzz/$log)"
  rc=0
  touch "target/logs/$t.start"
  (cd "target/logs/$t" && nice -n 10 cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$build_dir" "$t" \
    "$fuzz_dir/target/corpus/$t" "$fuzz_dir/corpus/$t" -- \
    -max_total_time="$seconds" -jobs=1 -workers=1 -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$fuzz_dir/artifacts/$t/") > "$log" 2>&1 || rc=$?
  # The child's own log (fuzz-0.log) has the status lines; the parent's has the final stats.
  cat "target/logs/$t/fuzz-0.log" >> "$log" 2> /dev/null || true
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  crashes=$(find "artifacts/$t" -type f -newer "target/logs/$t.start" | wc -l)
  summary+=("$(printf '%-16s runs %-10s runs/s %-7s cov %-6s ft %-6s crashes %s' \
    "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$crashes")")
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    failed+=("$t")
    say "$t FAILED (exit $rc); the end of its log:"
    tail -40 "$log" | sed 's/^/    /'
  fi
done

say "summary (${seconds} s per target; total $(( $(date +%s) - start )) s including the build):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  say "crashes or errors in: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with"
  say "cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>)"
  exit 1
fi

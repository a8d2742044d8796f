#!/usr/bin/env bash
# Run every fuzz target for a bounded time on the stable toolchain (cargo-fuzz, libFuzzer,
# `--sanitizer none`); see fuzz/README.md.
#
#   fuzz/run.sh [--seconds N] [--timeout S] [TARGET...]     (default: 60 s each, 1 s per input)
#
# Fails (non-zero exit) when a target panics, crashes, or spends longer than the timeout on one
# input, after running all of them; the input that did it is kept under fuzz/artifacts/<target>/.
# Prints executions per second and total executions per target.
#
# Environment (defaults suit CI; everything lives outside the clone and is reused between runs):
#   CARGO_TARGET_DIR       $HOME/.cache/entitlements/fuzz-target (instrumented build; not the main one)
#   ENTITLEMENTS_TOOLS_DIR $HOME/.cache/entitlements/tools (cargo-fuzz is installed there if missing)
#   FUZZ_CORPUS_DIR        $HOME/.cache/entitlements/fuzz-corpus (what the fuzzers learn, per target;
#                          fuzz/corpus/<target> in the repo is the seed corpus, read, never written)
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
seconds=60
timeout=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --timeout) timeout="$2"; shift 2 ;;
    --timeout=*) timeout="${1#*=}"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir"
[ ${#targets[@]} -gt 0 ] || targets=(catalog stripe_webhook grpc_requests)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entitlements/fuzz-target}"
tools="${ENTITLEMENTS_TOOLS_DIR:-$HOME/.cache/entitlements/tools}"
corpus_cache="${FUZZ_CORPUS_DIR:-$HOME/.cache/entitlements/fuzz-corpus}"
artifacts="$fuzz_dir/artifacts"
logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$CARGO_TARGET_DIR" "$tools" "$corpus_cache" "$artifacts" "$logs"

# cargo-fuzz, pinned, from crates.io (it builds on stable; libFuzzer itself comes with the
# libfuzzer-sys crate and is compiled by its build script with the system C++ compiler).
cargo_fuzz="$tools/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz"
if [ ! -x "$cargo_fuzz" ]; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
fi

# Stable toolchain: no sanitizer (they need -Z flags), coverage instrumentation only; debug
# assertions and overflow checks on, as in the test profile. `fuzz` below is the fuzz dir.
flags=(--sanitizer none --debug-assertions --fuzz-dir "$fuzz_dir")

max_len() {
  case "$1" in
    catalog) echo 16384 ;;
    stripe_webhook) echo 32768 ;;
    *) echo 4096 ;;
  esac
}

echo "== build: cargo fuzz build ${flags[*]} ($(rustc --version))"
start=$(date +%s)
if [ ${#targets[@]} -eq 1 ]; then
  "$cargo_fuzz" fuzz build "${flags[@]}" "${targets[0]}"
else
  "$cargo_fuzz" fuzz build "${flags[@]}" # every target, in one cargo build
fi
echo "build: $(( $(date +%s) - start )) s"

failed=()
summary=()
for t in "${targets[@]}"; do
  [ -d "corpus/$t" ] || { echo "no seed corpus fuzz/corpus/$t" >&2; exit 2; }
  work="$corpus_cache/$t"
  mkdir -p "$work" "$artifacts/$t"
  log="$logs/$t.log"
  marker="$logs/$t.started"
  touch "$marker"
  echo
  echo "== $t: ${seconds} s, timeout ${timeout} s per input (learned corpus: $work)"
  set +e
  "$cargo_fuzz" fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$timeout" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -print_final_stats=1 -print_pcs=0 \
    -artifact_prefix="$artifacts/$t/" 2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==[0-9]+== ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written|ALARM)'
  status=${PIPESTATUS[0]}
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$( (grep -oE 'cov: [0-9]+' "$log" || true) | tail -1 | cut -d' ' -f2)
  corpus_n=$(find "$work" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    verdict=FAILED
    echo "-- $t FAILED (exit $status); full log: $log"
    grep -E -A40 'panicked at|ALARM: working on the last Unit|deadly signal|out-of-memory' "$log" | head -60 || true
    find "$artifacts/$t" -type f -newer "$marker" | while read -r a; do
      echo "   input: $a"
      echo "   reproduce: $cargo_fuzz fuzz run ${flags[*]} $t $a"
    done
  else
    verdict=ok
  fi
  summary+=("$(printf '%-16s %-7s %10s exec/s %12s execs  cov %6s  corpus %6s' "$t" "$verdict" "${rate:-n/a}" "${execs:-n/a}" "${cov:-n/a}" "$corpus_n")")
done

echo
echo "== fuzz summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran clean"

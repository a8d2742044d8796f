#!/usr/bin/env bash
# Instructions per request on the server (BENCHMARKS.md §1.1 method): the release server runs
# under callgrind pinned to CPU 0 with instrumentation off; loadgen drives it 1x1 from CPU 1;
# instrumentation is on only for the measured phase, then dumped. Ir / completed requests.
# Deterministic for a given binary (steal and other load do not change instruction counts).
#
#   benches/callgrind.sh [--rounds 3] [--rpcs "health check"] [--phase 5] [--serve-args "..."]
#
# --serve-args: extra `serve` flags, e.g. "--otlp-endpoint http://127.0.0.1:4317" (with a sink
# running: `target/release/examples/otlp_sink 127.0.0.1:4317`).
#
# Prints: round rpc requests Ir Ir_per_request
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ROUNDS=3 RPCS="health check" PHASE=5 SERVE_ARGS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2;;
    --rpcs) RPCS="$2"; shift 2;;
    --phase) PHASE="$2"; shift 2;;
    --serve-args) SERVE_ARGS="$2"; shift 2;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    *) echo "unknown arg: $1" >&2; exit 2;;
  esac
done
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
SERVER=0
echo "round rpc requests Ir Ir_per_request"
for r in $(seq 1 "$ROUNDS"); do
  for rpc in $RPCS; do
    rm -f "$WORK"/callgrind.out.* "$WORK/cg.db"*
    (cd "$WORK" && exec taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$WORK/callgrind.out.%p" "$REL/entitlements" serve \
      --catalog "$ROOT/examples/catalog.toml" --database-url "$WORK/cg.db" \
      --grpc-addr 127.0.0.1:50095 --http-addr 127.0.0.1:51095 $SERVE_ARGS >"$WORK/server.log" 2>&1) &
    SERVER=$!
    for _ in $(seq 1 600); do curl -fsS http://127.0.0.1:51095/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    # Warm-up uninstrumented, then a second run entirely inside the instrumented window, so the
    # requests loadgen counts are exactly those measured (plus one connection set-up, alike for all).
    lg() { taskset -c 1 "$REL/loadgen" --addr http://127.0.0.1:50095 --rpc "$rpc" \
      --catalog "$ROOT/examples/catalog.toml" --connections 1 --streams 1 --json "$@"; }
    lg --warmup 0s --duration 3s >/dev/null
    callgrind_control -i on "$SERVER" >/dev/null
    callgrind_control -z "$SERVER" >/dev/null
    out=$(lg --warmup 0s --duration "${PHASE}s")
    callgrind_control -d "$SERVER" >/dev/null
    callgrind_control -i off "$SERVER" >/dev/null
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
    requests=$(python3 -c "import json,sys; print(json.load(sys.stdin)['requests'])" <<<"$out")
    ir=$(callgrind_annotate "$(ls -S "$WORK"/callgrind.out.* | head -1)" 2>/dev/null \
      | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
    echo "$r $rpc $requests $ir $(( ir / requests ))"
  done
done

#!/usr/bin/env bash
# Check vs CheckBatch vs the transport floor (grpc.health.v1/Check) through our own load tool,
# interleaved: per round and shape every RPC runs once, order reversed on even rounds, so that
# machine drift hits all of them alike. Server on CPU 0, loadgen on CPU 1 (BENCHMARKS.md).
#
#   benches/rounds.sh [--rounds 3] [--shapes "4x8 16x16"] [--rpcs "check batch health"]
#                     [--duration 10s] [--batch-size 10]
#
# Prints: round shape rpc rps p50_us p99_us errors
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ROUNDS=3 SHAPES="4x8 16x16" RPCS="check batch health" DURATION=10s BATCH=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2;;
    --shapes) SHAPES="$2"; shift 2;;
    --rpcs) RPCS="$2"; shift 2;;
    --duration) DURATION="$2"; shift 2;;
    --batch-size) BATCH="$2"; shift 2;;
    -h|--help) sed -n '2,9p' "$0"; exit 0;;
    *) echo "unknown arg: $1" >&2; exit 2;;
  esac
done
WORK="$(mktemp -d)"
cp "$REL/entitlements" "$WORK/ent-rounds"
taskset -c 0 "$WORK/ent-rounds" serve --catalog "$ROOT/examples/catalog.toml" --database-url "$WORK/rounds.db" \
  --grpc-addr 127.0.0.1:50085 --http-addr 127.0.0.1:51085 >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:51085/readyz >/dev/null 2>&1 && break; sleep 0.1; done
echo "round shape rpc rps p50_us p99_us errors"
for r in $(seq 1 "$ROUNDS"); do
  order="$RPCS"; (( r % 2 == 0 )) && order="$(tr ' ' '\n' <<<"$RPCS" | tac | tr '\n' ' ')"
  for shape in $SHAPES; do
    for rpc in $order; do
      out=$(taskset -c 1 "$REL/loadgen" --addr http://127.0.0.1:50085 --rpc "$rpc" --batch-size "$BATCH" \
        --catalog "$ROOT/examples/catalog.toml" --connections "${shape%x*}" --streams "${shape#*x}" \
        --duration "$DURATION" --warmup 2s --json)
      echo "$r $shape $rpc $(python3 -c "import json,sys; d=json.load(sys.stdin); \
print(d['throughput_rps'], d['p50_us'], d['p99_us'], d['errors'])" <<<"$out")"
    done
  done
done

#!/usr/bin/env bash
# Side-by-side with a peer (issue 5, BENCHMARKS.md "Peer comparison"): our Check, our own
# grpc.health.v1/Check (the transport floor of the same server) and Cerbos CheckResources on an
# equivalent entitlement policy, driven by the same neutral load generator (h2load) in one
# interleaved run. Both servers are pinned to CPU 0, h2load to CPU 1.
#
#   benches/peer.sh [--rounds 3] [--duration 10] [--warmup 2] [--shapes "1x1 4x8 16x16"]
#
# Needs the neutral harness (../shared/peer-bench, or PEER_BENCH=DIR): its cerbos-up.sh installs
# Cerbos (npm @cerbos/cerbos-linux-x64), h2load (nghttp2-client) and protoc (protobuf-compiler).
# Our server is the release build in ${CARGO_TARGET_DIR:-target}/release.
#
# The equivalent question on both sides: "may tenant acme (plan pro + add-on teams) use
# teams_integration?" -> allowed. Cerbos gets plan and add-ons as principal attributes in the
# request; we look the tenant up in our cache (seeded once through the admin API).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_BENCH="${PEER_BENCH:-$ROOT/../shared/peer-bench}"
PB_HOME="${PB_HOME:-/tmp/peer-bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/entitlements"
ROUNDS=3 DURATION=10 WARMUP=2 SHAPES="1x1 4x8 16x16"
GRPC=127.0.0.1:50081 HTTP=127.0.0.1:8181
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2;;
    --duration) DURATION="$2"; shift 2;;
    --warmup) WARMUP="$2"; shift 2;;
    --shapes) SHAPES="$2"; shift 2;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    *) echo "unknown arg: $1" >&2; exit 2;;
  esac
done
[[ -x "$PEER_BENCH/compare.sh" ]] || { echo "peer-bench harness not found at $PEER_BENCH (set PEER_BENCH)" >&2; exit 1; }
[[ -x "$BIN" ]] || { echo "build first: cargo build --release ($BIN missing)" >&2; exit 1; }
log() { echo "[peer] $*" >&2; }

"$PEER_BENCH/cerbos-up.sh" >&2
CERBOS_PID="$(cat "$PB_HOME/cerbos.pid")"
GRPCURL="$(command -v grpcurl || echo "$PB_HOME/venv/bin/grpcurl")"

# Our server: a copy of the binary (a name no `pkill entitlements` elsewhere matches), fresh SQLite.
WORK="$(mktemp -d)"
cp "$BIN" "$WORK/ent-peer"
taskset -c 0 "$WORK/ent-peer" serve --catalog "$ROOT/examples/catalog.toml" --database-url "$WORK/peer.db" \
  --grpc-addr "$GRPC" --http-addr "$HTTP" --admin-token peer-bench >"$WORK/server.log" 2>&1 &
OURS=$!
trap 'kill "$OURS" 2>/dev/null || true; "$PEER_BENCH/cerbos-down.sh" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$HTTP/readyz" >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
admin() { "$GRPCURL" -plaintext -H 'authorization: Bearer peer-bench' -d "$2" "$GRPC" "entitlements.v1.AdminService/$1" >/dev/null; }
admin AssignPlan '{"tenant_id":"acme","plan":"pro","actor":"peer-bench","rationale":"peer comparison"}'
admin GrantAddOn '{"tenant_id":"acme","addon":"teams","actor":"peer-bench","rationale":"peer comparison"}'

# Bodies: the same framing code the harness uses for Cerbos.
"$PEER_BENCH/proto-encode.sh" --proto "$ROOT/proto/entitlements/v1/entitlements.proto" -I "$ROOT/proto" \
  -I /usr/include --type entitlements.v1.CheckRequest \
  --text 'tenant_id: "acme" feature: "teams_integration" intent: INTENT_READ' -o "$WORK/ours-check.bin"
ANSWER="$("$GRPCURL" -plaintext -d '{"tenant_id":"acme","feature":"teams_integration","intent":"INTENT_READ"}' \
  "$GRPC" entitlements.v1.EntitlementService/Check)"
grep -q '"allowed": true' <<<"$ANSWER" || { log "our Check did not allow: $ANSWER"; exit 1; }
log "our server pid $OURS on CPU 0, Check -> allowed (plan pro + teams)"

"$PEER_BENCH/compare.sh" --rounds "$ROUNDS" --shapes "$SHAPES" \
  --target "ours-check,http://$GRPC/entitlements.v1.EntitlementService/Check,$WORK/ours-check.bin,$OURS" \
  --target "ours-health,http://$GRPC/grpc.health.v1.Health/Check,$PB_HOME/health.bin,$OURS" \
  --target "cerbos-check,http://127.0.0.1:3593/cerbos.svc.v1.CerbosService/CheckResources,$PB_HOME/cerbos-allow.bin,$CERBOS_PID" \
  --target "cerbos-health,http://127.0.0.1:3593/grpc.health.v1.Health/Check,$PB_HOME/health.bin,$CERBOS_PID" \
  -- --duration "$DURATION" --warmup "$WARMUP" --wait-idle 300

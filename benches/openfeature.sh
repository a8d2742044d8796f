#!/usr/bin/env bash
# OpenFeature throughput beside Check (issue 14, BENCHMARKS.md §0.2): the same question — may
# tenant acme (plan pro + add-on teams) use teams_integration? — asked three ways of one server:
#   gRPC  entitlements.v1.EntitlementService/Check           (h2load, h2c)
#   gRPC  flagd.evaluation.v1.Service/ResolveBoolean         (h2load, h2c)
#   HTTP  POST /ofrep/v1/evaluate/flags/teams_integration    (h2load --h1: HTTP/1.1)
# plus each transport's floor: grpc.health.v1/Check and GET /healthz.
#
#   benches/openfeature.sh [--rounds 3] [--duration 10] [--warmup 2] [--shapes "1x1 4x8 16x16"]
#
# Server pinned to CPU 0, h2load to CPU 1. gRPC shapes are C connections x M streams (the
# neutral harness ../shared/peer-bench, compare.sh: interleaved, order reversed on even
# rounds); HTTP/1.1 has one request in flight per connection, so the OFREP shape CxM runs C*M
# connections: the same number of requests in flight. Needs h2load/nghttp (nghttp2-client),
# protoc (protobuf-compiler), grpcurl and the release build in ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_BENCH="${PEER_BENCH:-$ROOT/../shared/peer-bench}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/entitlements"
ROUNDS=3 DURATION=10 WARMUP=2 SHAPES="1x1 4x8 16x16"
GRPC=127.0.0.1:50091 HTTP=127.0.0.1:8191
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
for t in h2load grpcurl protoc curl; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
log() { echo "[openfeature] $*" >&2; }

# A copy of the binary (a name no `pkill entitlements` elsewhere matches), fresh SQLite.
WORK="$(mktemp -d)"
cp "$BIN" "$WORK/ent-of"
taskset -c 0 "$WORK/ent-of" serve --catalog "$ROOT/examples/catalog.toml" --database-url "$WORK/of.db" \
  --grpc-addr "$GRPC" --http-addr "$HTTP" --admin-token of-bench >"$WORK/server.log" 2>&1 &
OURS=$!
trap 'kill "$OURS" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$HTTP/readyz" >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
admin() { grpcurl -plaintext -H 'authorization: Bearer of-bench' -d "$2" "$GRPC" "entitlements.v1.AdminService/$1" >/dev/null; }
admin AssignPlan '{"tenant_id":"acme","plan":"pro","actor":"of-bench","rationale":"openfeature bench"}'
admin GrantAddOn '{"tenant_id":"acme","addon":"teams","actor":"of-bench","rationale":"openfeature bench"}'

# Bodies, framed by the harness's own code; every answer checked to be "allowed".
"$PEER_BENCH/proto-encode.sh" --proto "$ROOT/proto/entitlements/v1/entitlements.proto" -I "$ROOT/proto" \
  -I /usr/include --type entitlements.v1.CheckRequest \
  --text 'tenant_id: "acme" feature: "teams_integration" intent: INTENT_READ' -o "$WORK/check.bin"
"$PEER_BENCH/proto-encode.sh" --proto "$ROOT/proto/flagd/evaluation/v1/evaluation.proto" -I "$ROOT/proto" \
  -I /usr/include --type flagd.evaluation.v1.ResolveBooleanRequest \
  --text 'flag_key: "teams_integration" context { fields { key: "targetingKey" value { string_value: "acme" } } fields { key: "intent" value { string_value: "read" } } }' \
  -o "$WORK/flagd.bin"
"$PEER_BENCH/proto-encode.sh" --proto "$PEER_BENCH/protos/health.proto" --type grpc.health.v1.HealthCheckRequest \
  --text '' -o "$WORK/health.bin" 2>/dev/null
OFREP_BODY='{"context":{"targetingKey":"acme","intent":"read"}}'
printf '%s' "$OFREP_BODY" >"$WORK/ofrep.json"
grep -q '"allowed": true' <<<"$(grpcurl -plaintext -d '{"tenant_id":"acme","feature":"teams_integration","intent":"INTENT_READ"}' \
  "$GRPC" entitlements.v1.EntitlementService/Check)" || { log "Check did not allow"; exit 1; }
grep -q '"value": true' <<<"$(grpcurl -plaintext -d '{"flag_key":"teams_integration","context":{"targetingKey":"acme","intent":"read"}}' \
  "$GRPC" flagd.evaluation.v1.Service/ResolveBoolean)" || { log "ResolveBoolean did not allow"; exit 1; }
grep -q '"value":true' <<<"$(curl -fsS -X POST -H 'content-type: application/json' -d "$OFREP_BODY" \
  "http://$HTTP/ofrep/v1/evaluate/flags/teams_integration")" || { log "OFREP did not allow"; exit 1; }
log "server pid $OURS on CPU 0; Check, ResolveBoolean and OFREP -> allowed"

# One HTTP/1.1 h2load run, in the harness's columns (percentiles from h2load's --log-file,
# nearest rank; errors = failed + errored + timeout + 4xx + 5xx).
h1() {
  local label=$1 shape=$2 url=$3 data=${4:-}
  local c=$(( ${shape%x*} * ${shape#*x} )) logf="$WORK/h1.log" out
  local args=(--h1 -c "$c" -m 1 -t 1 -D "$DURATION" --warm-up-time "$WARMUP" --log-file "$logf")
  [[ -z "$data" ]] || args+=(-d "$data" -H 'content-type: application/json')
  rm -f "$logf"
  taskset -c 1 h2load "${args[@]}" "$url" >"$WORK/h1.out" 2>&1
  python3 - "$label" "$shape" "$logf" "$WORK/h1.out" <<'PY'
import re, sys
label, shape, logf, outf = sys.argv[1:5]
out = open(outf).read()
rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))
m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
errs = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
errs += int(st.group(3)) + int(st.group(4))
lat = sorted(int(l.split()[2]) for l in open(logf) if len(l.split()) >= 3)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
print(f"{label} {shape} {rps:.0f} {q(0.50)} {q(0.90)} {q(0.99)} {q(0.999)} {lat[-1] if lat else 0} {errs}")
PY
}

echo "label shape rps p50_us p90_us p99_us p999_us max_us errors"
for r in $(seq 1 "$ROUNDS"); do
  "$PEER_BENCH/compare.sh" --rounds 1 --shapes "$SHAPES" \
    --target "check,http://$GRPC/entitlements.v1.EntitlementService/Check,$WORK/check.bin,$OURS" \
    --target "flagd-resolve-boolean,http://$GRPC/flagd.evaluation.v1.Service/ResolveBoolean,$WORK/flagd.bin,$OURS" \
    --target "grpc-health,http://$GRPC/grpc.health.v1.Health/Check,$WORK/health.bin,$OURS" \
    -- --duration "$DURATION" --warmup "$WARMUP" --wait-idle 120 | grep -v '^#\|^label' || true
  for shape in $SHAPES; do
    log "round $r/$ROUNDS $shape: ofrep, http-healthz (HTTP/1.1)"
    h1 ofrep "$shape" "http://$HTTP/ofrep/v1/evaluate/flags/teams_integration" "$WORK/ofrep.json"
    h1 http-healthz "$shape" "http://$HTTP/healthz"
  done
done

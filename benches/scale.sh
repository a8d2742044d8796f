#!/usr/bin/env bash
# Scale curves and store-bound figures (issue 5, BENCHMARKS.md "Scale"). Each mode prints one
# line per configuration; the server is pinned to CPU 0 and loadgen to CPU 1.
#
#   benches/scale.sh tenants   [--tenants "1000 100000 1000000"] [--features "11 500"]
#       Check latency (1x1) and throughput (4x8) with N cached tenants, and RSS per cached
#       tenant: (RSS after caching N tenants - RSS before) / N. Catalogs with F features come
#       from `benchdata catalog` (11 = examples/catalog.toml).
#   benches/scale.sh cold      [--database-url URL] [--rate 500]
#       Cold-miss latency: every Check names a seeded tenant the server has never loaded.
#   benches/scale.sh usage     [--database-url URL] [--shape 4x16]
#       RecordUsage (enforce, DELTA 1) throughput, spread over 10k seeded tenants.
#   benches/scale.sh relay
#       Idle RSS of a relay (sidecar) following a central server.
#
# Binaries: ${CARGO_TARGET_DIR:-target}/release/{entitlements,loadgen,benchdata}
# (cargo build --release --bins). PostgreSQL URLs look like postgres://postgres@127.0.0.1:5432/bench.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
MODE="${1:-}"; shift || true
TENANTS="1000 100000 1000000" FEATURES="11 500" DB="" RATE=500 SHAPE=4x16 DURATION=10s
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tenants) TENANTS="$2"; shift 2;;
    --features) FEATURES="$2"; shift 2;;
    --database-url) DB="$2"; shift 2;;
    --rate) RATE="$2"; shift 2;;
    --shape) SHAPE="$2"; shift 2;;
    --duration) DURATION="$2"; shift 2;;
    -h|--help) sed -n '2,19p' "$0"; exit 0;;
    *) echo "unknown arg: $1" >&2; exit 2;;
  esac
done
for b in entitlements loadgen benchdata; do
  [[ -x "$REL/$b" ]] || { echo "missing $REL/$b: cargo build --release --bins" >&2; exit 1; }
done
WORK="$(mktemp -d)"
# Copies under names no `pkill entitlements` elsewhere on the machine can hit.
cp "$REL/entitlements" "$WORK/ent-scale"
SERVER_PID=""
cleanup() { [[ -z "$SERVER_PID" ]] || kill "$SERVER_PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "# $*" >&2; }
store_of() { case "$1" in postgres*) echo postgres;; *) echo sqlite;; esac; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d.get(k)) for k in sys.argv[1:]))" "$@"; }

# start_server PORT DB CATALOG [extra serve args...]: starts pinned to CPU 0, waits until ready.
start_server() {
  local port=$1 db=$2 catalog=$3; shift 3
  taskset -c 0 "$WORK/ent-scale" serve --catalog "$catalog" --database-url "$db" \
    --grpc-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$((port + 1000))" --admin-token scale "$@" \
    >"$WORK/server-$port.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$((port + 1000))/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/server-$port.log" >&2; return 1
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }
loadgen() { taskset -c 1 "$REL/loadgen" "$@"; }
seed() { log "seeding $2 tenants into $1"; "$REL/benchdata" seed --database-url "$1" --tenants "$2" >&2; }

case "$MODE" in
tenants)
  max=0; for n in $TENANTS; do (( n > max )) && max=$n; done
  DBF="$WORK/scale.db"; seed "$DBF" "$max"
  echo "features tenants rss_before_mib rss_after_mib bytes_per_tenant prefill_s p50_us p99_us p999_us rps_4x8"
  for f in $FEATURES; do
    if [[ "$f" == 11 ]]; then cat="$ROOT/examples/catalog.toml"; else
      cat="$WORK/catalog-$f.toml"; "$REL/benchdata" catalog --features "$f" >"$cat"; fi
    for n in $TENANTS; do
      start_server 50091 "$DBF" "$cat" --cache-capacity $((n * 2)) --max-ttl 1h --stale-if-error 1m
      sleep 1; before=$(rss_kib "$SERVER_PID")
      t0=$(date +%s.%N)
      loadgen --addr http://127.0.0.1:50091 --catalog "$cat" --tenants "$n" --prefill --read \
        --connections 4 --streams 16 --duration 1s --warmup 0s --json >/dev/null
      t1=$(date +%s.%N); sleep 2; after=$(rss_kib "$SERVER_PID")
      lat=$(loadgen --addr http://127.0.0.1:50091 --catalog "$cat" --tenants "$n" --feature teams_integration \
        --duration "$DURATION" --warmup 2s --json | json p50_us p99_us p999_us)
      rps=$(loadgen --addr http://127.0.0.1:50091 --catalog "$cat" --tenants "$n" --feature teams_integration \
        --connections 4 --streams 8 --duration "$DURATION" --warmup 2s --json | json throughput_rps)
      after2=$(rss_kib "$SERVER_PID"); (( after2 > after )) && after=$after2
      echo "$f $n $((before / 1024)) $((after / 1024)) $(( (after - before) * 1024 / n )) \
$(python3 -c "print(round($t1 - $t0, 1))") $lat $rps"
      stop_server
    done
  done
  ;;
cold)
  : "${DB:=$WORK/cold.db}"
  seed "$DB" 200000
  echo "store rate p50_us p90_us p99_us p999_us max_us requests errors"
  # A warm baseline first at the same rate (one tenant, always cached), then cold misses.
  start_server 50093 "$DB" "$ROOT/examples/catalog.toml" --cache-capacity 1000000
  base=$(loadgen --addr http://127.0.0.1:50093 --tenants 1 --rate "$RATE" --connections 1 --streams 8 \
    --duration "$DURATION" --warmup 2s --json | json p50_us p90_us p99_us p999_us max_us requests errors)
  buckets() { curl -fsS http://127.0.0.1:51093/metrics | grep '^entitlements_decision_duration_seconds_bucket'; }
  buckets >"$WORK/before.txt"
  cold=$(loadgen --addr http://127.0.0.1:50093 --tenants 200000 --fresh-tenants --rate "$RATE" --connections 1 \
    --streams 8 --duration "$DURATION" --warmup 2s --json | json p50_us p90_us p99_us p999_us max_us requests errors)
  buckets >"$WORK/after.txt"
  stop_server
  echo "$(store_of "$DB")-hit $RATE $base"
  echo "$(store_of "$DB")-cold $RATE $cold"
  # Server side, without transport: the decision-path histogram over the cold run only (every
  # request there is a miss: store load + resolve + decide).
  python3 - "$WORK/before.txt" "$WORK/after.txt" <<'PY'
import re, sys
def read(p):
    return {m.group(1): float(m.group(2)) for m in (re.search(r'le="([^"]+)"} (\S+)', l) for l in open(p)) if m}
b, a = read(sys.argv[1]), read(sys.argv[2])
total = a["+Inf"] - b.get("+Inf", 0)
print("server-side cold misses: " + "  ".join(
    f"<={float(le) * 1e3:g}ms {100 * (a[le] - b.get(le, 0)) / total:.1f}%"
    for le in a if le != "+Inf" and float(le) >= 0.0005) + f"  (n={total:.0f})")
PY
  ;;
usage)
  : "${DB:=$WORK/usage.db}"
  seed "$DB" 10000
  start_server 50095 "$DB" "$ROOT/examples/catalog.toml"
  echo "store shape rps p50_us p99_us refused errors"
  out=$(loadgen --addr http://127.0.0.1:50095 --rpc record-usage --feature ai_requests --tenants 10000 \
    --connections "${SHAPE%x*}" --streams "${SHAPE#*x}" --duration "$DURATION" --warmup 2s --json \
    | json throughput_rps p50_us p99_us refused errors)
  stop_server
  echo "$(store_of "$DB") $SHAPE $out"
  ;;
relay)
  start_server 50097 "$WORK/central.db" "$ROOT/examples/catalog.toml"
  central=$SERVER_PID
  taskset -c 0 "$WORK/ent-scale" serve --catalog "$ROOT/examples/catalog.toml" --upstream http://127.0.0.1:50097 \
    --upstream-token scale --grpc-addr 127.0.0.1:50098 --http-addr 127.0.0.1:51098 >"$WORK/relay.log" 2>&1 &
  relay=$!
  for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:51098/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 5
  echo "process rss_mib"
  echo "central $(( $(rss_kib "$central") / 1024 ))"
  echo "relay-idle $(( $(rss_kib "$relay") / 1024 ))"
  kill "$relay"; wait "$relay" 2>/dev/null || true
  ;;
*) sed -n '2,19p' "$0"; exit 2;;
esac

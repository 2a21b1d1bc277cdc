#!/usr/bin/env bash
# trackhub and the Node + Redis baseline (loadtest/baselines/node-redis, the seeds' design) on the
# same load in one run: for each offered rate, a fresh trackhub (release, SQLite, one node) and
# a fresh baseline with its own Redis, each driven by trackhub-loadtest with the same flags
# (DRIVERS drivers, one fix per frame, WATCHERS whole-area watchers). Prints one table row per
# system and rate. CPU per fix: trackhub's from its own /metrics over the measured window (the
# load generator's `hub_cpu_us_per_fix`); the baseline's is Node's plus its Redis's utime+stime
# (/proc/<pid>/stat) over the whole run ÷ fixes acked. Bounded: 2 × rates × (DURATION_S + ~20 s).
#   DRIVERS=10000 RATES="10000 25000 50000" DURATION_S=40 WARMUP_S=10 WATCHERS=10 \
#     bash loadtest/side-by-side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DRIVERS=${DRIVERS:-10000}
RATES=${RATES:-"10000 25000 50000"}
DURATION_S=${DURATION_S:-40}
WARMUP_S=${WARMUP_S:-10}
WATCHERS=${WATCHERS:-10}
OUT=${OUT:-target/side-by-side}
mkdir -p "$OUT"

command -v redis-server >/dev/null || { echo "side-by-side: redis-server is required" >&2; exit 1; }
command -v node >/dev/null || { echo "side-by-side: node is required" >&2; exit 1; }
cargo build --release --locked -p trackhub --bin trackhub
cargo build --release --locked -p trackhub-loadtest
(cd loadtest/baselines/node-redis && npm ci --no-audit --no-fund --loglevel=error)

export TRACKHUB_JWT_SECRET
TRACKHUB_JWT_SECRET=$(openssl rand -hex 32)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_ready() {
  for _ in $(seq 1 100); do curl -fs "$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "side-by-side: $1 did not become ready" >&2; return 1
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

load() { # hub url, json out
  target/release/trackhub-loadtest --hub "$1" --drivers "$DRIVERS" --fix-interval-ms "$INTERVAL_MS" \
    --batch 1 --watchers "$WATCHERS" --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" \
    --connect-rate 2000 --json "$2" >/dev/null 2>"$2.log"
}
row() { # system, json, cpu µs/fix
  jq -r --arg sys "$1" --arg cpu "$3" --arg offered "$RATE" \
    '"| \($sys) | \($offered) | \(.fixes_per_s|floor) | \(.acks_lost) | \(.ack_p50_ms) / \(.ack_p99_ms) | \(.fanout_p50_ms) / \(.fanout_p99_ms) | \($cpu) | \(.errors) |"' "$2"
}

echo "| system | offered fixes/s | acked fixes/s | not acked | ack p50 / p99 ms | fan-out p50 / p99 ms | CPU µs/fix | errors |"
echo "|---|---|---|---|---|---|---|---|"
for RATE in $RATES; do
  INTERVAL_MS=$(( DRIVERS * 1000 / RATE ))

  data=$(mktemp -d)
  port=$(free_port)
  target/release/trackhub serve --data-dir "$data" --addr "127.0.0.1:$port" --conn-rate-per-ip 0 \
    --max-msgs-per-s 0 >"$OUT/trackhub-$RATE.server.log" 2>&1 &
  hub=$!; PIDS+=("$hub")
  wait_ready "http://127.0.0.1:$port"
  load "http://127.0.0.1:$port" "$OUT/trackhub-$RATE.json"
  kill "$hub"; wait "$hub" 2>/dev/null || true
  rm -rf "$data"
  row trackhub "$OUT/trackhub-$RATE.json" "$(jq -r '.hub_cpu_us_per_fix // "-" | if type=="number" then (.*10|round/10) else . end' "$OUT/trackhub-$RATE.json")"

  rport=$(free_port)
  redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no >/dev/null 2>&1 &
  rpid=$!; PIDS+=("$rpid")
  for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  bport=$(free_port)
  PORT=$bport REDIS_URL="redis://127.0.0.1:$rport" node loadtest/baselines/node-redis/server.js \
    >"$OUT/baseline-$RATE.server.log" 2>&1 &
  bpid=$!; PIDS+=("$bpid")
  wait_ready "http://127.0.0.1:$bport"
  before=$(( $(cpu_ticks "$bpid") + $(cpu_ticks "$rpid") ))
  load "http://127.0.0.1:$bport" "$OUT/baseline-$RATE.json"
  after=$(( $(cpu_ticks "$bpid") + $(cpu_ticks "$rpid") ))
  acked=$(jq '.fixes_acked' "$OUT/baseline-$RATE.json")
  hz=$(getconf CLK_TCK)
  cpu=$(python3 -c "print(round(($after - $before) / $hz * 1e6 / max($acked, 1), 1))")
  kill "$bpid" "$rpid"; wait "$bpid" "$rpid" 2>/dev/null || true
  row "Node + Redis" "$OUT/baseline-$RATE.json" "$cpu"
done

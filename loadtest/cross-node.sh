#!/usr/bin/env bash
# Cross-node fan-out latency and Redis commands per fix (issue 3 figures in BENCHMARKS.md).
# Starts the local two-node cluster (scripts/cluster.sh) with the given flush interval, then runs
# the load generator RUNS times with drivers on node 1 and the watcher on node 2 (cross) or on
# node 1 (same), and prints one JSON line per run. Bounded: RUNS x DURATION_S seconds each.
#   FLUSH_MS=100 RUNS=3 DURATION_S=20 DRIVERS=1000 INTERVAL_MS=100 BATCH=1 WATCHERS=1 \
#     bash loadtest/cross-node.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLUSH_MS=${FLUSH_MS:-100}
RUNS=${RUNS:-3}
DURATION_S=${DURATION_S:-20}
DRIVERS=${DRIVERS:-1000}
INTERVAL_MS=${INTERVAL_MS:-100}
BATCH=${BATCH:-1}
WATCHERS=${WATCHERS:-1}
cargo build --release --locked --workspace
bash scripts/cluster.sh stop >/dev/null 2>&1 || true
TRACKHUB_FLUSH_INTERVAL_MS=$FLUSH_MS bash scripts/cluster.sh start >/dev/null
trap 'bash scripts/cluster.sh stop >/dev/null' EXIT
export TRACKHUB_JWT_SECRET
TRACKHUB_JWT_SECRET=$(cat .cluster/jwt_secret)
for run in $(seq 1 "$RUNS"); do
  for where in same cross; do
    watch=http://127.0.0.1:8081
    [ "$where" = cross ] && watch=http://127.0.0.1:8082
    out=$(mktemp)
    target/release/trackhub-loadtest --hub http://127.0.0.1:8081 --watch-hub "$watch" \
      --drivers "$DRIVERS" --fix-interval-ms "$INTERVAL_MS" --batch "$BATCH" --watchers "$WATCHERS" --duration-s "$DURATION_S" \
      --redis-url redis://127.0.0.1:6379/ --json "$out" >/dev/null 2>&1
    python3 -c "import json,sys; r=json.load(open('$out')); print(json.dumps({'flush_ms':$FLUSH_MS,'run':$run,'watcher':'$where', **{k:r[k] for k in ['fixes_per_s','fixes_sent','fixes_acked','ack_p50_ms','ack_p99_ms','fanout_p50_ms','fanout_p99_ms','redis_publish_per_fix','errors']}}))"
    rm -f "$out"
  done
done

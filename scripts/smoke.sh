#!/usr/bin/env bash
# The README's first command as a new user runs it, checked end to end: `cargo run --release --
# serve` with its embedded defaults (SQLite and a generated secret in the data dir, in-process
# bus), then /livez, /openapi.json through a validator, a short replay of real Amazon traces with trips, a check-in read back over
# REST, `eval-arrival` on a few chunks, and a clean stop on SIGTERM (exit 0).
#
# Only the address and the data dir are moved (TRACKHUB_ADDR, TRACKHUB_DATA_DIR: a free port and a
# temp dir), so that the run leaves nothing in the checkout and never meets another hub.
# Run by scripts/test.sh (and so by CI); on its own: `bash scripts/smoke.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
hub_pid=
cleanup() {
  [ -n "$hub_pid" ] && kill -KILL "$hub_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "smoke: FAILED: $*" >&2
  echo "--- hub log (last 40 lines)" >&2
  tail -n 40 "$work/hub.log" >&2 || true
  exit 1
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TRACKHUB_ADDR="127.0.0.1:$port" TRACKHUB_DATA_DIR="$work/data"
base="http://127.0.0.1:$port"
data=../shared/data/amazon_delivery_activity_labels/data_anon
[ -d "$data" ] || fail "$data (the Amazon traces) is missing"

echo "smoke: building (cargo build --release)"
start=$(date +%s)
cargo build --release --locked --quiet
echo "smoke: built in $(( $(date +%s) - start )) s"
echo "smoke: cargo run --release -- serve   (on $TRACKHUB_ADDR, data in a temp dir)"
# `cargo run` replaces itself with the hub on Unix, so this pid is the hub's.
cargo run --release --locked --quiet -- serve >"$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 3000); do
  curl -fsS "$base/livez" >/dev/null 2>&1 && break
  kill -0 "$hub_pid" 2>/dev/null || fail "the hub exited before answering /livez"
  sleep 0.1
done
livez=$(curl -fsS "$base/livez") || fail "/livez did not answer within 300 s"
grep -q '"ok"' <<<"$livez" || fail "/livez answered $livez"
echo "smoke: /livez ok"

# The OpenAPI document, checked by a real validator (openapi-spec-validator, from PyPI, pinned in
# scripts/requirements-openapi.txt; its venv is kept under target/ between runs).
venv=target/openapi-venv
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv" || fail "python3 -m venv (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet -r scripts/requirements-openapi.txt || fail "pip install of the OpenAPI validator"
fi
curl -fsS "$base/openapi.json" -o "$work/openapi.json" || fail "GET /openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json" || fail "/openapi.json is not a valid OpenAPI document"
echo "smoke: /openapi.json is valid OpenAPI $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["openapi"])' "$work/openapi.json")"

bin=target/release/trackhub
# (No `ls | head` or `echo | grep -q` here: with pipefail, an early-closing reader fails the
# pipeline with SIGPIPE.)
all_chunks=("$data"/*.csv)
chunks=("${all_chunks[@]:0:8}")
summary=$("$bin" replay --quiet --speed 600 --amazon-trips --origin 47.6062,-122.3321 --hub "$base" "${chunks[@]}" 2>&1) \
  || fail "replay failed: $summary"
echo "smoke: replay: $summary"
grep -Eq 'failed drivers 0' <<<"$summary" || fail "a replayed driver failed"

admin=$("$bin" token --role admin --sub smoke | tail -n1)
checkins=$(curl -fsS -H "Authorization: Bearer $admin" "$base/v1/checkins?limit=100")
count=$(echo "$checkins" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["checkins"]))')
[ "$count" -gt 0 ] || fail "no check-in visible over REST after the replay: $checkins"
echo "smoke: $count check-ins visible over GET /v1/checkins"

echo "smoke: eval-arrival on 20 chunks"
eval_out=$(cargo run --release --locked --quiet -- eval-arrival --limit 20 2>&1) \
  || fail "eval-arrival failed: $eval_out"
# The score line (the per-evidence split follows it).
eval_line=$(grep -m1 'precision' <<<"$eval_out" || true)
echo "smoke: $eval_line"
grep -q 'precision' <<<"$eval_line" || fail "eval-arrival printed no score: $eval_out"

kill -TERM "$hub_pid"
status=0
wait "$hub_pid" || status=$?
hub_pid=
[ "$status" -eq 0 ] || fail "the hub exited $status on SIGTERM (expected a clean drain, 0)"
echo "smoke: SIGTERM drained, exit 0"
echo "smoke: ok"

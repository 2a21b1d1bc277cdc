#!/usr/bin/env bash
# Every check and every test, as CI runs them: format, lints, then the whole suite twice, on the
# embedded SQLite store and on PostgreSQL (a fresh database per test hub), with the live map's
# browser test (scripts/browser-test.sh) between the two. The multi-node tests
# (tests/cluster.rs: hub processes, their own redis-server, PostgreSQL) run in the first pass; they
# use PostgreSQL whatever the pass, so the second one skips them rather than repeat them; so do
# the fault tests (tests/it/faults.rs), which choose their stores themselves (SQLite, the shared
# PostgreSQL, and a PostgreSQL instance of their own that they stop for 3 minutes).
# scripts/smoke.sh runs the README's first command as a new user would and checks what it serves.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ]; then
  echo "test.sh: ../shared/data (the real GPS traces) is missing next to the project" >&2
  exit 1
fi
bash scripts/ensure-services.sh
# The property tests (tests/it/properties.rs) draw from a fixed seed here, so a run of this script
# is reproducible; plain `cargo test` and the fuzz targets (fuzz/) keep exploring new inputs.
# Override to search: PROPTEST_RNG_SEED=$RANDOM bash scripts/test.sh
export PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-20261208}
PG_URL=${TRACKHUB_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# Leftovers of interrupted runs.
for db in $(psql "$PG_URL" -Atc "select datname from pg_database where datname like 'trackhub_test_%'"); do
  psql "$PG_URL" -qc "drop database if exists $db with (force)"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests on SQLite (embedded), and the multi-node tests on PostgreSQL + Redis"
TRACKHUB_PG_URL="$PG_URL" cargo test --locked
echo "== the live map in headless Chromium"
bash scripts/browser-test.sh
echo "== the README's first command: cargo run --release -- serve (smoke test)"
bash scripts/smoke.sh
echo "== tests on PostgreSQL"
TRACKHUB_TEST_DATABASE_URL="$PG_URL" cargo test --locked --tests -- --skip cluster_ --skip faults::

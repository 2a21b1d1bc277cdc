#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the test suite: starts the local cluster,
# or installs it from Debian's packages on a machine without one. Fails loudly if it cannot.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-services: installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_up; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
for _ in $(seq 1 30); do pg_up && break; sleep 1; done
pg_up || { echo "ensure-services: PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }

# The suite connects as `postgres` without a password (trust on loopback, as on the CI machine).
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  echo "ensure-services: allowing trust auth for loopback connections"
  hba=$(su postgres -c "psql -Atc 'show hba_file'")
  sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  su postgres -c "psql -qc 'select pg_reload_conf()'"
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null
echo "ensure-services: PostgreSQL ready"

# Redis: the multi-node tests start their own redis-server on a free port; scripts/cluster.sh and
# the load tests use the one on 127.0.0.1:6379.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-services: installing Redis (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  echo "ensure-services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
fi
redis_up || { echo "ensure-services: Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }
echo "ensure-services: Redis ready"

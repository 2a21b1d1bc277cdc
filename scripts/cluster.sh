#!/usr/bin/env bash
# The docker-compose topology as local processes, for demos and load tests without Docker:
# PostgreSQL and Redis (scripts/ensure-services.sh), N trackhub nodes, and nginx balancing them
# when nginx is installed (clients may as well connect to any node: the Redis bus shares the
# fleet between them). State (logs, pids, data dirs, the shared secret) lives outside the
# checkout, in $CLUSTER_DIR.
#
#   bash scripts/cluster.sh start     # builds release, starts everything, prints the URLs
#   bash scripts/cluster.sh status
#   bash scripts/cluster.sh stop
#
# Settings (environment): NODES (2), BASE_PORT (8081: nodes on 8081, 8082, ...), LB_PORT (8080),
# DATABASE_URL (postgres://postgres@127.0.0.1:5432/trackhub_cluster, created if missing),
# REDIS_URL (redis://127.0.0.1:6379/), TRACKHUB_JWT_SECRET (generated once into $CLUSTER_DIR),
# CLUSTER_DIR (${XDG_RUNTIME_DIR:-/tmp}/trackhub-cluster-$USER), LB (auto: nginx when installed;
# nginx: install it with apt-get if missing; none: no balancer).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-2}
BASE_PORT=${BASE_PORT:-8081}
LB_PORT=${LB_PORT:-8080}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
DATABASE_URL=${DATABASE_URL:-$PG_SERVER/trackhub_cluster}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
DIR=${CLUSTER_DIR:-${XDG_RUNTIME_DIR:-/tmp}/trackhub-cluster-${USER:-$(id -un)}}
LB=${LB:-auto}

stop() {
  for pidfile in "$DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # SIGTERM: the hubs drain (sockets closed with 1012, history flushed) before exiting.
    kill "$pid" 2>/dev/null && echo "cluster: stopped $(basename "$pidfile" .pid) ($pid)"
    rm -f "$pidfile"
  done
}

status() {
  for i in $(seq 1 "$NODES"); do
    port=$((BASE_PORT + i - 1))
    echo "node$i :$port $(curl -s "http://127.0.0.1:$port/readyz" || echo down)"
  done
  [ -e "$DIR/nginx.pid" ] && echo "nginx :$LB_PORT $(curl -s "http://127.0.0.1:$LB_PORT/readyz" || echo down)"
  return 0
}

start() {
  mkdir -p "$DIR"
  stop >/dev/null 2>&1 || true
  bash scripts/ensure-services.sh
  if [ "$LB" = nginx ] && ! command -v nginx >/dev/null 2>&1; then
    echo "cluster: installing nginx (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  fi
  cargo build --release --locked --bin trackhub
  db=${DATABASE_URL##*/}
  if [ "$(psql "$PG_SERVER/postgres" -Atc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    psql "$PG_SERVER/postgres" -qc "create database $db"
  fi
  [ -s "$DIR/jwt_secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/jwt_secret"
  secret=${TRACKHUB_JWT_SECRET:-$(cat "$DIR/jwt_secret")}

  servers=""
  for i in $(seq 1 "$NODES"); do
    port=$((BASE_PORT + i - 1))
    mkdir -p "$DIR/node$i"
    TRACKHUB_ADDR=127.0.0.1:$port TRACKHUB_DATA_DIR="$DIR/node$i" DATABASE_URL="$DATABASE_URL" \
      REDIS_URL="$REDIS_URL" TRACKHUB_JWT_SECRET="$secret" TRACKHUB_TRUST_FORWARDED_FOR=true \
      nohup target/release/trackhub serve >"$DIR/node$i.log" 2>&1 &
    echo $! >"$DIR/node$i.pid"
    servers="$servers    server 127.0.0.1:$port max_fails=3 fail_timeout=5s;\n"
  done

  if [ "$LB" != none ] && command -v nginx >/dev/null 2>&1; then
    # deploy/nginx.conf with the compose service names replaced by the local ports.
    awk -v servers="$servers" '
      /server hub1:8080/ { printf "%s", servers; next }
      /server hub[0-9]+:8080/ { next }
      /listen 80;/ { print "    listen 127.0.0.1:'"$LB_PORT"';"; next }
      { print }
    ' deploy/nginx.conf | sed 's|^events {|pid '"$DIR"'/nginx.pid;\nerror_log '"$DIR"'/nginx.log;\nevents {|' >"$DIR/nginx.conf"
    sed -i 's/^http {/http {\n  access_log off;/' "$DIR/nginx.conf"
    nginx -c "$DIR/nginx.conf" -p "$DIR"
    entry="http://127.0.0.1:$LB_PORT (nginx)"
  else
    entry="any node (no balancer: LB=nginx installs one)"
  fi

  for _ in $(seq 1 100); do
    ready=0
    for i in $(seq 1 "$NODES"); do
      curl -fs "http://127.0.0.1:$((BASE_PORT + i - 1))/readyz" | grep -q '"ready"' && ready=$((ready + 1))
    done
    [ "$ready" = "$NODES" ] && break
    sleep 0.2
  done
  status
  echo "cluster: $NODES nodes, clients connect to $entry; state in $DIR"
  echo "cluster: tokens: TRACKHUB_JWT_SECRET=\$(cat $DIR/jwt_secret) target/release/trackhub token --role admin --sub me"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

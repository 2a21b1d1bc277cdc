#!/usr/bin/env bash
# The browser tests (web/test/: the live map, the customer's tracking page, the driver app): headless Chromium from Debian's packages,
# driven by playwright-core from npm (web/package-lock.json), against a real hub fed by a replay
# of the Amazon traces. Installs what is missing; fails loudly when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt() {
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v chromium >/dev/null 2>&1; then
  echo "browser-test: installing chromium (apt-get)"
  need_apt chromium fonts-dejavu-core
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser-test: installing node and npm (apt-get)"
  need_apt nodejs npm
fi
# playwright-core needs Node.js 20 or newer.
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "browser-test: Node.js $(node --version) is too old for playwright-core (needs >= 20)" >&2
  exit 1
fi

cargo build --locked --bin trackhub
(cd web && npm ci --no-audit --no-fund --loglevel=error)
(cd web && TRACKHUB_BIN="$PWD/../target/debug/trackhub" node --test test/)

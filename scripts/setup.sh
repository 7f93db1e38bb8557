#!/usr/bin/env bash
# Set up a fresh machine for minewatch: system packages (tests only) and the Python venv.
# Idempotent: does nothing that is already done. Usage: scripts/setup.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PY="${PYTHON:-python3}"

need_apt=()
command -v npm >/dev/null || need_apt+=(nodejs npm)  # the wall screen's chart library
if [ "$mode" = test ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v mosquitto >/dev/null || need_apt+=(mosquitto mosquitto-clients)
  [ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql)
  command -v prometheus >/dev/null || need_apt+=(prometheus prometheus-alertmanager)  # bench/peers.py
  fc-list 2>/dev/null | grep -qi "noto sans cjk" || need_apt+=(fonts-noto-cjk)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need_apt[*]} (run as root or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  echo "installing system packages: ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)-$mode
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  extra=""
  [ "$mode" = test ] && extra="[dev]"
  .venv/bin/pip install -q -c constraints.txt -e ".$extra"
  touch "$stamp"
fi

# Front-end libraries (ECharts) from the npm registry, pinned by dashboard/package-lock.json.
if [ ! -f dashboard/node_modules/.package-lock.json ] || \
   ! cmp -s dashboard/package-lock.json dashboard/node_modules/.package-lock.json.src 2>/dev/null; then
  npm ci --prefix dashboard --no-audit --no-fund --loglevel=error
  cp dashboard/package-lock.json dashboard/node_modules/.package-lock.json.src
fi

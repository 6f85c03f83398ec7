#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them.
#   - mosquitto (the tests start a real broker on 127.0.0.1) and systemd-analyze (unit checks)
#   - shellcheck and python3-venv (tests/test_install_pi.py builds the Pi venv on /usr/bin/python3)
#   - .venv with all extras (train, device, dev)
#   - .venv-device with ONLY the device extra, to prove the daemon runs without TensorFlow
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[train,device,dev]'

[ -x .venv-device/bin/python ] || "$PY" -m venv .venv-device
.venv-device/bin/python -m pip install -q --upgrade pip
.venv-device/bin/python -m pip install -q '.[device]'
# a plain (non-editable) install, as on the Pi: refresh it so it never runs stale code
.venv-device/bin/python -m pip install -q --no-deps --force-reinstall .
export EDGE_DEVICE_ONLY_PYTHON="$PWD/.venv-device/bin/python"

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"

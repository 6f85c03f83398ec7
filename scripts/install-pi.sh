#!/usr/bin/env bash
# Install edge-device as a systemd service on Raspberry Pi OS Bookworm or Trixie (arm64). Idempotent: a second
# run with the same source, model and unit changes no file. See --help.
set -euo pipefail
umask 022

usage() {
  cat <<'EOF'
Usage: sudo scripts/install-pi.sh [--model DIR] [--no-start] [--root DIR]
       sudo scripts/install-pi.sh --uninstall [--purge] [--root DIR]

Installs, from the repository this script sits in:
  apt        python3-venv, python3-picamera2, python3-lgpio (those the archive has; the others are named and skipped)
  user       system user edge-device (group edge-device) in the groups video and gpio (missing groups are created)
  venv       /opt/edge-device/venv with --system-site-packages (sees apt's picamera2 and lgpio) and the project's
             `device` extra, pinned to the system's apt numpy so apt's C extensions keep working
  config     /etc/edge-device/config.toml from systemd/config.example.toml, only when absent (never overwritten)
  model      with --model DIR: DIR/model.tflite + DIR/model.json (+ calibration.npz) into /var/lib/edge-device (sha256 checked)
  unit       /etc/systemd/system/edge-device.service, enabled; then `edge-device check` as the service user,
             then the service is started (restarted when something changed), unless --no-start

Options:
  --model DIR   copy model.tflite, model.json (and calibration.npz if there) from DIR (one export)
  --no-start    install and enable, but do not start or restart the service
  --root DIR    install into DIR as a fake root: every path prefixed, no apt, no running systemd (the unit is
                enabled offline with systemctl --root), no chown, no check (its paths are the real root's)
  --uninstall   stop and disable the service, remove the unit, the venv and /opt/edge-device; keep the config,
                /var/lib/edge-device (model, snapshots) and the user
  --purge       with --uninstall: also remove /etc/edge-device, /var/lib/edge-device and the user edge-device
                (the groups video and gpio are kept: other software uses them)
  -h, --help    this text
Environment: EDGE_PYTHON=/path/to/python3 picks the system Python the venv is built on (default /usr/bin/python3).
EOF
}

die() { echo "install-pi: $*" >&2; exit 1; }
say() { echo "install-pi: $*"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT="" MODEL="" START=1 MODE=install PURGE=0
PY=${EDGE_PYTHON:-/usr/bin/python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --model) [ $# -ge 2 ] || die "--model needs a directory"; MODEL=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1; see --help" ;;
  esac
done
[ "$PURGE" -eq 0 ] || [ "$MODE" = uninstall ] || die "--purge only goes with --uninstall"
[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0"
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT is not a directory; create it first"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || ROOT=""
fi

NAME=edge-device
OPT=/opt/edge-device
VENV=$OPT/venv
ETC=/etc/edge-device
CONFIG=$ETC/config.toml
STATE=/var/lib/edge-device
UNIT=/etc/systemd/system/edge-device.service
p() { printf '%s%s' "$ROOT" "$1"; }             # a path inside the (fake) root
fake() { [ -n "$ROOT" ]; }
systemd_up() { ! fake && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
CHANGED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# put SRC DEST MODE: install a file unless DEST already has the same bytes and mode.
put() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    say "unchanged: ${dest#"$ROOT"}"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  say "wrote: ${dest#"$ROOT"}"
  CHANGED=1
}

in_file() { [ -f "$(p "$2")" ] && grep -q "^$1:" "$(p "$2")"; }   # NAME FILE: an entry named NAME exists
members() { awk -F: -v g="$1" '$1 == g {print $4}' "$(p /etc/group)"; }
prefix_args() { if fake; then printf '%s\n' --prefix "$ROOT"; fi; }

# ---------------------------------------------------------------------------------------------- uninstall
uninstall() {
  local unit; unit=$(p "$UNIT")
  if [ -f "$unit" ]; then
    if systemd_up; then
      systemctl disable --now "$NAME" 2>&1 | sed 's/^/  /'
    elif command -v systemctl >/dev/null; then
      systemctl --root="${ROOT:-/}" disable "$NAME" 2>&1 | sed 's/^/  /'
    fi
    rm -f "$unit"; say "removed: $UNIT"
    if systemd_up; then systemctl daemon-reload; fi
  fi
  if [ -e "$(p "$OPT")" ]; then rm -rf "$(p "$OPT")"; say "removed: $OPT (venv, README)"; fi
  if [ "$PURGE" -eq 1 ]; then
    for d in "$ETC" "$STATE"; do
      if [ -e "$(p "$d")" ]; then rm -rf "$(p "$d")"; say "removed: $d"; fi
    done
    local args; mapfile -t args < <(prefix_args)
    if in_file "$NAME" /etc/passwd; then userdel "${args[@]}" "$NAME"; say "removed: user $NAME"; fi
    if in_file "$NAME" /etc/group; then groupdel "${args[@]}" "$NAME"; say "removed: group $NAME"; fi
    say "kept: groups video and gpio"
  else
    say "kept: $ETC, $STATE and the user $NAME (--uninstall --purge removes them)"
  fi
}

# ---------------------------------------------------------------------------------------------- install
check_model() {  # before anything is written: a wrong --model must not leave a half install
  [ -n "$MODEL" ] || return 0
  local f want got
  for f in model.tflite model.json; do [ -f "$MODEL/$f" ] || die "$MODEL/$f not found; --model takes the export folder"; done
  want=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$MODEL/model.json" 2>/dev/null) \
    || die "$MODEL/model.json: not a model card with a sha256; copy it from the same export as model.tflite"
  got=$(sha256sum "$MODEL/model.tflite" | cut -d' ' -f1)
  [ "$want" = "$got" ] || die "$MODEL/model.tflite sha256 ${got:0:12}… is not the ${want:0:12}… in model.json; copy both from the same export"
}

check_platform() {
  local arch; arch=$(uname -m)
  case "$arch" in
    aarch64|x86_64) ;;
    armv6l|armv7l) die "$arch: PyPI has no ai-edge-litert or opencv-python-headless wheels for 32-bit ARM; install the 64-bit Raspberry Pi OS" ;;
    *) die "$arch: not supported (arm64 Raspberry Pi OS, or x86_64 for testing)" ;;
  esac
  [ -x "$PY" ] || die "$PY not found; install python3 (or set EDGE_PYTHON)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is $("$PY" -V 2>&1); Python 3.11 or newer is needed"
}

apt_packages() {
  if fake; then say "skipped (--root): apt packages python3-venv python3-picamera2 python3-lgpio"; return; fi
  local missing=() want=() pkg cand
  for pkg in python3-venv python3-picamera2 python3-lgpio; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || { say "unchanged: apt packages python3-venv python3-picamera2 python3-lgpio"; return; }
  apt-get update -qq
  for pkg in "${missing[@]}"; do
    cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then want+=("$pkg"); else say "skipped: $pkg (not in this system's apt archive)"; fi
  done
  if [ ${#want[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    say "installed: ${want[*]}"
  fi
}

user_and_groups() {
  local args g; mapfile -t args < <(prefix_args)
  if fake && [ ! -f "$(p /etc/passwd)" ]; then
    install -d "$(p /etc)"
    printf 'root:x:0:0:root:/root:/bin/bash\n' >"$(p /etc/passwd)"
    printf 'root:x:0:\n' >"$(p /etc/group)"
    install -m 0640 /dev/null "$(p /etc/shadow)"; printf 'root:*:1:0:99999:7:::\n' >"$(p /etc/shadow)"
    install -m 0640 /dev/null "$(p /etc/gshadow)"; printf 'root:*::\n' >"$(p /etc/gshadow)"
    say "wrote: minimal /etc/passwd, group, shadow, gshadow (the fake root had none)"
  fi
  for g in video gpio; do
    if ! in_file "$g" /etc/group; then groupadd "${args[@]}" --system "$g"; say "created: group $g (missing here)"; fi
  done
  if ! in_file "$NAME" /etc/passwd; then
    useradd "${args[@]}" --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
      --groups video,gpio "$NAME"
    say "created: system user $NAME in groups video, gpio"
  else
    for g in video gpio; do
      if ! members "$g" | tr ',' '\n' | grep -qx "$NAME"; then
        usermod "${args[@]}" -a -G "$g" "$NAME"; say "added: $NAME to group $g"
      fi
    done
    say "unchanged: user $NAME"
  fi
}

# The pip constraints: the apt numpy (apt's C extensions were built against it) and, under NumPy 1.x, the last
# releases whose wheels still accept it (PyPI metadata: opencv-python-headless 4.12+ and ml-dtypes 0.6+ require numpy>=2).
write_constraints() {
  local out=$1 np
  np=$("$PY" -I -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  : >"$out"
  if [ -n "$np" ]; then
    echo "numpy==$np" >>"$out"
    case "$np" in 1.*) printf 'opencv-python-headless<4.12\nml-dtypes<0.6\n' >>"$out" ;; esac
    say "system numpy $np: the venv keeps it (pip constraints: $(paste -sd' ' "$out"))"
  else
    say "no system numpy for $PY: the venv gets numpy from PyPI"
  fi
}

PARTS=(pyproject.toml README.md device training export)
source_hash() {  # the project's files, the constraints and the Python: what the installed venv is made of
  local parts=() x
  for x in "${PARTS[@]}"; do [ ! -e "$REPO/$x" ] || parts+=("$x"); done
  { (cd "$REPO" && find "${parts[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
       | xargs -0 sha256sum); cat "$1"; "$PY" -V; } | sha256sum | cut -d' ' -f1
}

venv_and_project() {
  local venv py_version stamp_file hash tmp=$WORK/venv
  venv=$(p "$VENV")
  py_version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ -x "$venv/bin/python" ]; then
    if ! grep -qx 'include-system-site-packages = true' "$venv/pyvenv.cfg" \
       || [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$py_version" ]; then
      say "rebuilding: $VENV (not a --system-site-packages venv of Python $py_version)"
      rm -rf "$venv"
    fi
  fi
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$venv" || die "cannot create $VENV; apt-get install python3-venv"
    say "created: $VENV (--system-site-packages, Python $py_version)"
    CHANGED=1
  fi
  mkdir -p "$tmp"
  write_constraints "$tmp/constraints.txt"
  put "$tmp/constraints.txt" "$venv/edge-device-constraints.txt" 0644 || true
  hash=$(source_hash "$venv/edge-device-constraints.txt")
  stamp_file="$venv/edge-device-source.sha256"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$hash" ]; then
    say "unchanged: project in $VENV (source tree sha256 ${hash:0:12})"
  else
    local parts=() x
    for x in "${PARTS[@]}"; do [ ! -e "$REPO/$x" ] || parts+=("$x"); done
    # Build from a copy: pip builds in the source tree, which may be read-only or someone's checkout.
    mkdir "$tmp/src"
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - "${parts[@]}" | tar -C "$tmp/src" -xf -
    say "installing: ${REPO}[device] into $VENV (pip; this takes a while on a Pi)"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
      -c "$venv/edge-device-constraints.txt" "${tmp}/src[device]" \
      || die "pip could not install the device extra into $VENV (see pip's message above)"
    "$venv/bin/python" -c 'import numpy, cv2, paho.mqtt.client, gpiozero; from ai_edge_litert.interpreter import Interpreter' \
      || die "the venv cannot import its packages (see the error above); report it with the versions below"
    printf '%s\n' "$hash" >"$stamp_file"
    say "installed: project (source tree sha256 ${hash:0:12})"
    CHANGED=1
  fi
  "$venv/bin/python" - <<'EOF'
import platform
from importlib import metadata
rows = [("python", platform.python_version(), "")]
for name in ("numpy", "ai-edge-litert", "opencv-python-headless", "paho-mqtt", "gpiozero", "edge-oneclass"):
    try:
        dist = metadata.distribution(name)
        rows.append((name, dist.version, str(dist.locate_file(""))))
    except metadata.PackageNotFoundError:
        rows.append((name, "missing", ""))
print("install-pi: versions: " + ", ".join(f"{n} {v}" for n, v, _ in rows))
print("install-pi: numpy from " + rows[1][2])
EOF
}

files() {
  put "$REPO/README.md" "$(p "$OPT/README.md")" 0644 || true
  if [ -e "$(p "$CONFIG")" ]; then
    say "kept: $CONFIG (never overwritten; the example is $REPO/systemd/config.example.toml)"
  else
    put "$REPO/systemd/config.example.toml" "$(p "$CONFIG")" 0644 || true
  fi
  # an edited config counts as a change: the service is checked and restarted with it
  sha256sum <"$(p "$CONFIG")" | cut -d' ' -f1 >"$WORK/config.sha256"
  put "$WORK/config.sha256" "$(p "$OPT/config.sha256")" 0644 || true
  if [ ! -d "$(p "$STATE")" ]; then
    install -d -m 0750 "$(p "$STATE")"; say "created: $STATE"
  fi
  if [ -n "$MODEL" ]; then
    local f
    # calibration.npz (newer exports) lets the feedback bank keep the label's recall honest
    for f in model.tflite model.json calibration.npz; do
      [ -f "$MODEL/$f" ] || continue
      put "$MODEL/$f" "$(p "$STATE/$f")" 0640 || true
    done
  fi
  if fake; then
    say "skipped (--root): chown $NAME of $STATE and the model (the user exists only in the fake root)"
  else
    chown -R "$NAME:$NAME" "$STATE"
  fi
  if put "$REPO/systemd/edge-device.service" "$(p "$UNIT")" 0644 && systemd_up; then systemctl daemon-reload; fi
}

run_check() {
  if fake; then
    say "skipped (--root): edge-device check (the config's paths are the real root's); ran --version: $("$(p "$VENV")/bin/edge-device" --version)"
    return
  fi
  say "edge-device check --config $CONFIG (as user $NAME):"
  local rc=0
  (cd "$STATE" && runuser -u "$NAME" -- "$VENV/bin/edge-device" check --config "$CONFIG") 2>&1 | sed 's/^/  /' || rc=$?
  [ "$rc" -eq 0 ] || say "check failed (exit $rc): edit $CONFIG (source, [mqtt] host) or copy a model with --model, then run this again"
}

service() {
  if ! systemd_up; then
    if command -v systemctl >/dev/null; then
      if [ "$(systemctl --root="${ROOT:-/}" is-enabled "$NAME" 2>/dev/null)" = enabled ]; then
        say "unchanged: $NAME enabled"
      else
        systemctl --root="${ROOT:-/}" enable "$NAME" 2>&1 | grep -v 'non-existent unit' | sed 's/^/  /' || true
        say "enabled offline: $NAME (systemctl --root=${ROOT:-/})"
      fi
    else
      say "skipped: enabling $NAME (no systemctl here)"
    fi
    run_check
    say "skipped: starting $NAME (systemd is not running here: fake root, chroot or container)"
    return
  fi
  systemctl enable --quiet "$NAME"
  local active=0
  if systemctl is-active --quiet "$NAME"; then active=1; fi
  if [ "$active" -eq 1 ] && [ "$CHANGED" -eq 0 ]; then
    say "unchanged: $NAME is running; check skipped (it would compete with the service for the camera)"
    return
  fi
  if [ "$START" -eq 0 ]; then
    if [ "$active" -eq 1 ]; then
      say "not restarted (--no-start): $NAME keeps running the old setup until: sudo systemctl restart $NAME"
    else
      run_check; say "not started (--no-start): sudo systemctl start $NAME"
    fi
    return
  fi
  if [ "$active" -eq 1 ]; then systemctl stop "$NAME"; fi   # the camera is exclusive: free it for the check
  run_check
  systemctl start "$NAME" || true                           # Type=notify: returns once the daemon is ready (or failed)
  say "service: $NAME is $(systemctl is-active "$NAME" || true); logs: journalctl -u $NAME -f"
}

if [ "$MODE" = uninstall ]; then uninstall; exit 0; fi
check_platform
check_model
if fake; then say "fake root $ROOT: no apt, no running systemd, no chown"; fi
apt_packages
user_and_groups
venv_and_project
files
service
say "done"

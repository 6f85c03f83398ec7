#!/usr/bin/env bash
# Proof on arm64 (emulated): Debian trixie and bookworm arm64 roots (debootstrap, built once and cached), the project
# installed there by scripts/install-pi.sh run inside the chroot, then for each CPU model (QEMU_CPU): `edge-device
# check`, a replay of a short clip and the scores of the same input tensors, compared with x86 running the same
# package versions. Prints a PASS/FAIL line per suite, CPU and model; exits 1 on any FAIL. Not part of the tests.
set -euo pipefail
umask 022

usage() {
  cat <<'EOF'
Usage: sudo scripts/test-arm64.sh [--model DIR]... [--cache DIR] [--suites trixie,bookworm] [--cpus cortex-a72,cortex-a76]

  --model DIR   also check this model folder (model.tflite + model.json); repeatable. The brightness fixture
                (tests/fixtures/brightness) is always checked.
  --cache DIR   where the arm64 roots (SUITE-arm64.tar), pip's cache, the x86 reference venvs and the work roots
                live (default ~/.cache/edge-arm64)
  --suites LIST Debian suites (default trixie,bookworm)
  --cpus LIST   QEMU_CPU models (default cortex-a72,cortex-a76: Pi 4 and Pi 5). Never `max`: its SVE/SME paths
                score every frame wrong without an error.
Environment: EDGE_CLIP (default ../shared/data/video/dog/05.mp4), DEBIAN_MIRROR (default http://deb.debian.org/debian).
EOF
}

die() { echo "test-arm64: $*" >&2; exit 2; }
say() { echo "test-arm64: $*"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edge-arm64
SUITES=trixie,bookworm
CPUS=cortex-a72,cortex-a76
MODELS=("$REPO/tests/fixtures/brightness")
CLIP_SRC=${EDGE_CLIP:-$REPO/../shared/data/video/dog/05.mp4}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
  case "$1" in
    --model) [ $# -ge 2 ] || die "--model needs a directory"; MODELS+=("$(cd "$2" && pwd)"); shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a directory"; CACHE=$2; shift 2 ;;
    --suites) [ $# -ge 2 ] || die "--suites needs a list"; SUITES=$2; shift 2 ;;
    --cpus) [ $# -ge 2 ] || die "--cpus needs a list"; CPUS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1; see --help" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mounts): sudo $0"
[ -f "$CLIP_SRC" ] || die "$CLIP_SRC not found; set EDGE_CLIP to a video file"
for m in "${MODELS[@]}"; do
  if [ ! -f "$m/model.tflite" ] || [ ! -f "$m/model.json" ]; then die "$m: needs model.tflite and model.json"; fi
done
IFS=, read -r -a SUITE_LIST <<<"$SUITES"
IFS=, read -r -a CPU_LIST <<<"$CPUS"
for c in "${CPU_LIST[@]}"; do [ "$c" != max ] || die "QEMU_CPU=max scores wrong (SVE/SME); pin a real core"; done
mkdir -p "$CACHE/pip"
CACHE=$(cd "$CACHE" && pwd)
say "cache: $CACHE"
T0=$SECONDS
RESULTS=()
MOUNTED=()

# ------------------------------------------------------------------------------------------------ host
host_setup() {
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then   # register by hand; F: the interpreter works in chroots
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
      >/proc/sys/fs/binfmt_misc/register
  fi
  grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt is not enabled; see /proc/sys/fs/binfmt_misc"
  say "host: $(qemu-aarch64-static --version | head -1)"
}

# A Pi-style /proc/cpuinfo: LiteRT's cpuinfo crashes on the x86 one qemu passes through.
write_cpuinfo() {  # CPU OUT
  local part variant rev features model i
  case "$1" in
    cortex-a72) part=0xd08 variant=0x0 rev=3 features="fp asimd evtstrm crc32 cpuid" model="Raspberry Pi 4 Model B Rev 1.5" ;;
    cortex-a76) part=0xd0b variant=0x4 rev=1 model="Raspberry Pi 5 Model B Rev 1.0"
                features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    *) die "no Pi cpuinfo for $1; use cortex-a72 or cortex-a76" ;;
  esac
  : >"$2"
  for ((i = 0; i < $(nproc); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$i" "$features" "$variant" "$part" "$rev" >>"$2"
  done
  printf 'Revision\t: c03115\nSerial\t\t: 10000000e5a1b2c3\nModel\t\t: %s\n' "$model" >>"$2"
}

prepare_root() {  # SUITE: the cached pristine root as a tarball
  local suite=$1 tar=$CACHE/$1-arm64.tar build=$CACHE/build-$1 t=$SECONDS
  if [ -f "$tar" ]; then say "$suite: cached root $tar ($(du -h "$tar" | cut -f1))"; return; fi
  say "$suite: building the arm64 root with debootstrap (minbase + python3, systemd, python3-pywt; ~10-20 min)"
  umount_under "$build"; rm -rf --one-file-system "$build"
  debootstrap --arch=arm64 --variant=minbase --include=python3,ca-certificates,systemd,python3-pywt \
    "$suite" "$build" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 \
    || die "debootstrap $suite failed; see $CACHE/debootstrap-$suite.log"
  chroot "$build" apt-get clean
  tar -C "$build" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf --one-file-system "$build"
  say "$suite: root built in $((SECONDS - t)) s -> $tar ($(du -h "$tar" | cut -f1))"
}

umount_under() {  # DIR: unmount everything below DIR, deepest first
  local m
  [ -d "$1" ] || return 0
  while read -r m; do umount "$m" || umount -l "$m"; done < <(findmnt -rn -o TARGET | grep "^$1/" | sort -r)
}
cleanup() { local r; for r in "${MOUNTED[@]}"; do umount_under "$r"; done; }
trap cleanup EXIT

mount_root() {  # ROOT
  local r=$1
  MOUNTED+=("$r")
  mount -t proc proc "$r/proc"
  mount --bind /sys "$r/sys"        # without /sys, LiteRT silently drops XNNPACK and the scores change
  mount -o remount,bind,ro "$r/sys"
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
  mkdir -p "$r/root/.cache/pip"; mount --bind "$CACHE/pip" "$r/root/.cache/pip"
}

inroot() {  # ROOT CPU CMD...: run CMD in the arm64 root under qemu pinned to CPU
  local r=$1 cpu=$2; shift 2
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" chroot "$r" "$@"
}

# x86 reference: a venv with exactly the arm64 side's package versions, and the same copy of the source installed in it.
ref_venv() {  # SUITE PINS_FILE
  local venv=$CACHE/ref-$1
  if [ -f "$venv/pins.txt" ] && cmp -s "$2" "$venv/pins.txt"; then return; fi
  rm -rf "$venv"; /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$2" >/dev/null \
    || die "x86 reference venv for $1: pip could not install $(paste -sd' ' "$2")"
  cp "$2" "$venv/pins.txt"
}

# ------------------------------------------------------------------------------------------------ one suite
run_suite() {
  local suite=$1 r=$CACHE/work-$1/root t cpu0=${CPU_LIST[0]} out=$CACHE/work-$1/out
  prepare_root "$suite"
  umount_under "$CACHE/work-$suite"; rm -rf --one-file-system "$CACHE/work-$suite"
  mkdir -p "$r" "$out"
  tar -C "$r" -xf "$CACHE/$suite-arm64.tar"
  mkdir -p "$r/src/edge-oneclass" "$r/work/models" "$r/work/out"
  tar -C "$REPO" --exclude=__pycache__ -cf - pyproject.toml README.md device training export scripts systemd \
    | tar -C "$r/src/edge-oneclass" -xf -
  local i names=()
  for i in "${!MODELS[@]}"; do
    names+=("m$i-$(basename "${MODELS[$i]}")")
    mkdir -p "$r/work/models/${names[$i]}"; cp "${MODELS[$i]}"/model.{tflite,json} "$r/work/models/${names[$i]}/"
  done
  cp "$CACHE/clip.mp4" "$r/work/clip.mp4"
  # the host's CA bundle: where the network intercepts TLS, pip in the root needs the same trust as the host
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
  chmod -R a+rX "$r/work"; chmod 1777 "$r/work/out"
  mount_root "$r"
  write_cpuinfo "$cpu0" "$out/cpuinfo-$cpu0"; mount --bind "$out/cpuinfo-$cpu0" "$r/proc/cpuinfo"

  say "$suite: scripts/install-pi.sh --model ${names[0]} --no-start, inside the chroot (QEMU_CPU=$cpu0)"
  t=$SECONDS
  if ! inroot "$r" "$cpu0" /src/edge-oneclass/scripts/install-pi.sh --model "/work/models/${names[0]}" --no-start \
      2>&1 | tee "$out/install.log" | sed 's/^/  | /'; then
    RESULTS+=("FAIL $suite install (see $out/install.log)"); umount_under "$CACHE/work-$suite"; return
  fi
  say "$suite: install took $((SECONDS - t)) s"
  t=$SECONDS
  inroot "$r" "$cpu0" /src/edge-oneclass/scripts/install-pi.sh --model "/work/models/${names[0]}" --no-start >"$out/install2.log" 2>&1
  if grep -qE '^install-pi: (wrote|created|installed|rebuilding)' "$out/install2.log"; then
    RESULTS+=("FAIL $suite second install run changed something: $(grep -E '^install-pi: (wrote|created|installed)' "$out/install2.log" | paste -sd';')")
  else
    RESULTS+=("PASS $suite second install run changed nothing ($((SECONDS - t)) s)")
  fi
  local vpy=/opt/edge-device/venv/bin/python
  if inroot "$r" "$cpu0" "$vpy" -c 'import pywt, numpy; print("pywt", pywt.__version__, "with numpy", numpy.__version__, "from", numpy.__file__)' \
      >"$out/pywt.log" 2>&1; then
    RESULTS+=("PASS $suite apt's python3-pywt imports in the venv: $(cat "$out/pywt.log")")
  else
    RESULTS+=("FAIL $suite apt's python3-pywt does not import in the venv: $(tail -1 "$out/pywt.log")")
  fi
  inroot "$r" "$cpu0" "$vpy" - >"$out/pins.txt" <<'EOF'
from importlib import metadata
for n in ("numpy", "opencv-python-headless", "ai-edge-litert", "ml-dtypes", "paho-mqtt", "gpiozero"):
    print(f"{n}=={metadata.version(n)}")
EOF
  say "$suite arm64 versions: $(inroot "$r" "$cpu0" "$vpy" -V) $(paste -sd' ' "$out/pins.txt")"
  # anything built from source (no wheel) or x86-only, or TensorFlow, in the Pi venv is a failure
  local bad
  bad=$(inroot "$r" "$cpu0" "$vpy" - <<'EOF'
import sys
from importlib import metadata
bad = []
for d in metadata.distributions():   # what pip put into the venv; apt's packages (system site) are Debian's builds
    if not str(d.locate_file("")).startswith(sys.prefix):
        continue
    name = d.metadata["Name"]
    if name.lower() in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        bad.append(f"{name} installed")
    wheel = d.read_text("WHEEL") or ""
    tags = [x.split(":", 1)[1].strip() for x in wheel.splitlines() if x.startswith("Tag:")]
    if any("x86_64" in t for t in tags):
        bad.append(f"{name} has an x86_64 wheel tag")
    if any(t.endswith("linux_aarch64") and "manylinux" not in t for t in tags) and name != "edge-oneclass":
        bad.append(f"{name} was built from source here ({tags[0]})")
print("; ".join(bad))
EOF
)
  if [ -n "$bad" ]; then RESULTS+=("FAIL $suite venv: $bad"); else RESULTS+=("PASS $suite venv: wheels only, no TensorFlow"); fi

  say "$suite: x86 reference venv with the same versions"
  ref_venv "$suite" "$out/pins.txt"
  "$CACHE/ref-$suite/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$r/src/edge-oneclass" >/dev/null || die "x86 reference venv for $suite: cannot install the source copy"
  local ref="$CACHE/ref-$suite/bin/python" src=$r/src/edge-oneclass n m cpu thr
  for i in "${!MODELS[@]}"; do
    n=${names[$i]} m=$r/work/models/${names[$i]}
    "$ref" "$src/scripts/arm64_scores.py" inputs "$CACHE/clip.mp4" "$m/model.tflite" \
      "$r/work/out/$n-inputs.npy" "$r/work/out/$n-frames.npy"
    "$ref" "$src/scripts/arm64_scores.py" score "$m/model.tflite" "$r/work/out/$n-inputs.npy" \
      "$CACHE/clip.mp4" "$out/$n-x86.json"
    # the card's threshold, or (if the clip never reaches it, e.g. the brightness fixture) the clip's median score
    thr=$("$ref" -c 'import json, statistics, sys
card = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))["frames"]
print("" if max(s) >= card["threshold"] else repr(statistics.median(s)))' "$m/model.json" "$out/$n-x86.json")
    # lossless frames: x86's decoded frames as PNGs, so both sides' daemons see the same pixels
    [ -d "$r/work/frames-$n" ] || "$ref" "$src/scripts/arm64_scores.py" pngs "$r/work/out/$n-frames.npy" "$r/work/frames-$n"
    chmod -R a+rX "$r/work"
    for side in x86 arm64 x86-png arm64-png; do
      local source=$CACHE/clip.mp4 mp=$m/model.tflite
      case "$side" in
        arm64) source=/work/clip.mp4 mp=/work/models/$n/model.tflite ;;
        x86-png) source=$r/work/frames-$n ;;
        arm64-png) source=/work/frames-$n mp=/work/models/$n/model.tflite ;;
      esac
      {
        printf '[camera]\nsource = "%s"\nfps = 10\n[model]\npath = "%s"\nthreads = 2\n' "$source" "$mp"
        [ -z "$thr" ] || printf 'threshold = %s\n' "$thr"
        # inside the chroot the service user writes pushed models where the unit's StateDirectory would be
        case "$side" in arm64*) printf 'store = "/var/lib/edge-device/models"\n' ;; esac
        printf '[detect]\non_frames = 3\nwindow = 5\noff_delay = 1.0\n[snapshot]\nenabled = false\n[log]\nlevel = "WARNING"\n'
      } >"$r/work/out/$n-$side.toml"
    done
    "$ref" -m edge_oneclass.device.cli run --config "$r/work/out/$n-x86.toml" >"$out/$n-x86.jsonl"
    "$ref" -m edge_oneclass.device.cli run --config "$r/work/out/$n-x86-png.toml" >"$out/$n-x86-png.jsonl"
    for cpu in "${CPU_LIST[@]}"; do
      umount "$r/proc/cpuinfo"; write_cpuinfo "$cpu" "$out/cpuinfo-$cpu"; mount --bind "$out/cpuinfo-$cpu" "$r/proc/cpuinfo"
      t=$SECONDS
      say "$suite $cpu $n: $(inroot "$r" "$cpu" "$vpy" /src/edge-oneclass/scripts/arm64_scores.py hwcap)"
      local ok=1 u=(runuser -u edge-device --)
      inroot "$r" "$cpu" "${u[@]}" /opt/edge-device/venv/bin/edge-device check --config "/work/out/$n-arm64.toml" \
        >"$out/$n-$cpu-check.log" 2>&1 || ok=0
      sed 's/^/  | /' "$out/$n-$cpu-check.log"
      inroot "$r" "$cpu" "${u[@]}" /opt/edge-device/venv/bin/edge-device run --config "/work/out/$n-arm64.toml" \
        >"$out/$n-$cpu.jsonl" 2>"$out/$n-$cpu-run.log" || ok=0
      inroot "$r" "$cpu" "${u[@]}" /opt/edge-device/venv/bin/edge-device run --config "/work/out/$n-arm64-png.toml" \
        >"$out/$n-$cpu-png.jsonl" 2>>"$out/$n-$cpu-run.log" || ok=0
      inroot "$r" "$cpu" "${u[@]}" "$vpy" /src/edge-oneclass/scripts/arm64_scores.py score \
        "/work/models/$n/model.tflite" "/work/out/$n-inputs.npy" /work/clip.mp4 "/work/out/$n-$cpu.json" \
        >"$out/$n-$cpu-score.log" 2>&1 || ok=0
      grep -q 'XNNPACK delegate' "$out/$n-$cpu-score.log" || { ok=0; echo "  no XNNPACK delegate on arm64 (is /sys mounted?)"; }
      if [ "$ok" -eq 0 ]; then
        tail -3 "$out/$n-$cpu-check.log" "$out/$n-$cpu-run.log" "$out/$n-$cpu-score.log" 2>/dev/null
        RESULTS+=("FAIL $suite $cpu $n: check, replay or scoring failed on arm64; see $out ($((SECONDS - t)) s)")
        continue
      fi
      "$ref" "$src/scripts/arm64_scores.py" compare "$out/$n-x86.json" "$r/work/out/$n-$cpu.json" \
        "$out/$n-x86.jsonl" "$out/$n-$cpu.jsonl" >"$out/$n-$cpu-compare.log"
      inroot "$r" "$cpu" "$vpy" /src/edge-oneclass/scripts/arm64_scores.py pixels /work/clip.mp4 \
        "/work/out/$n-frames.npy" "/work/out/$n-inputs.npy" >>"$out/$n-$cpu-compare.log" 2>&1
      "$ref" "$src/scripts/arm64_scores.py" events "$out/$n-x86-png.jsonl" "$out/$n-$cpu-png.jsonl" \
        >>"$out/$n-$cpu-compare.log"
      grep -v '^VERDICT' "$out/$n-$cpu-compare.log"
      local verdict; verdict=$(grep '^VERDICT' "$out/$n-$cpu-compare.log" | paste -sd' ')
      RESULTS+=("PASS $suite $cpu $n: edge-device check OK, XNNPACK delegate, replay ran ($((SECONDS - t)) s)")
      if [[ $verdict == *tensors=PASS* ]]; then
        RESULTS+=("PASS $suite $cpu $n: model outputs of the same input tensors bit-identical to x86 (scores with the class prior within 1e-9)")
      else
        RESULTS+=("FAIL $suite $cpu $n: model outputs of the same input tensors differ from x86; see $out/$n-$cpu-compare.log")
      fi
      if [[ $verdict == *"VERDICT events=PASS"* ]]; then
        RESULTS+=("PASS $suite $cpu $n: replay events on the same pixels (x86's decoded frames as PNGs) equal x86's")
      else
        RESULTS+=("FAIL $suite $cpu $n: replay events on the same pixels differ from x86's; see $out/$n-$cpu-compare.log")
      fi
      local why; why=$(grep -E 'decoded frames|decoding|preprocessing' "$out/$n-$cpu-compare.log" | sed 's/^ *//' | paste -sd';')
      if [[ $verdict == *"tensors=PASS events=PASS"* ]]; then
        RESULTS+=("PASS $suite $cpu $n: video replay events equal x86's")
      elif grep -q "preprocessing x86's decoded frames (arm64 vs x86): max |diff| 0 " "$out/$n-$cpu-compare.log"; then
        # the one difference left is FFmpeg's decoding (colour conversion) on each architecture: shown, not failed
        RESULTS+=("DIFF $suite $cpu $n: video replay events differ from x86's through video decoding alone: $why")
      else
        RESULTS+=("FAIL $suite $cpu $n: video replay events differ from x86's: $why")
      fi
    done
  done
  umount_under "$CACHE/work-$suite"
}

host_setup
if [ ! -f "$CACHE/clip.mp4" ]; then   # cut once, with OpenCV in a small host venv
  [ -x "$CACHE/host/bin/python" ] || /usr/bin/python3 -m venv "$CACHE/host"
  "$CACHE/host/bin/python" -m pip install -q --disable-pip-version-check numpy opencv-python-headless >/dev/null \
    || die "cannot install OpenCV into $CACHE/host to cut the clip"
  "$CACHE/host/bin/python" "$REPO/scripts/arm64_scores.py" clip "$CLIP_SRC" "$CACHE/clip.mp4.tmp.mp4" --seconds 3 --every 3
  mv "$CACHE/clip.mp4.tmp.mp4" "$CACHE/clip.mp4"
fi
for s in "${SUITE_LIST[@]}"; do run_suite "$s"; done

echo
echo "== test-arm64 summary ($((SECONDS - T0)) s; cache $CACHE)"
printf '%s\n' "${RESULTS[@]}"
if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then echo "RESULT: FAIL"; exit 1; fi
n_diff=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^DIFF' || true)
if [ "$n_diff" -gt 0 ]; then
  echo "RESULT: PASS ($n_diff DIFF: video decoding differs between arm64 and x86; on the same pixels everything is equal)"
else
  echo "RESULT: PASS"
fi

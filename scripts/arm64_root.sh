#!/usr/bin/env bash
# An arm64 Python with the runtime's onnxruntime, tokenizers and numpy, for qemu-aarch64: where
# `python -m handler build --target arm64` verifies the artifact on the target's own arithmetic
# (handler/compiler/on_target.py). Debian/Ubuntu only (apt-get download, dpkg-deb); no root
# privileges needed, nothing is installed on this system: Debian's arm64 python3 packages are
# unpacked into ROOT/sysroot, the aarch64 wheels pinned in layers/ into ROOT/site.
#
#   scripts/arm64_root.sh [ROOT]      # default .arm64-root (the build finds it; or ARM64_ROOT)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-${ARM64_ROOT:-.arm64-root}}"
PIP="${PIP:-python3 -m pip}"

for tool in qemu-aarch64 apt-get dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool not found: this needs Debian or Ubuntu with qemu-user (apt-get install qemu-user)" >&2
    exit 2
  fi
done

pin() { grep -h -E "^$1==" layers/requirements.txt layers/requirements-nodeps.txt | head -1; }
PINS=("$(pin onnxruntime)" "$(pin numpy)" "$(pin tokenizers)" "tqdm==4.67.1")
STAMP="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)"
if [ -f "$ROOT/versions.json" ] && grep -q "\"stamp\": \"$STAMP\"" "$ROOT/versions.json"; then
  echo "arm64 root: $ROOT is up to date"
  exit 0
fi
rm -rf "$ROOT"
mkdir -p "$ROOT/apt/state/lists/partial" "$ROOT/apt/cache/archives/partial" "$ROOT/debs" "$ROOT/sysroot"
APT=(-o "Dir::State=$PWD/$ROOT/apt/state" -o "Dir::Cache=$PWD/$ROOT/apt/cache"
     -o "Dir::State::status=/dev/null" -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
     -o "Debug::NoLocking=1" -q)
echo "== arm64 root: package lists"
apt-get "${APT[@]}" update >/dev/null
PYTHON=python3.11
PACKAGES=("$PYTHON-minimal" "lib$PYTHON-minimal" "lib$PYTHON-stdlib" libc6 libexpat1 zlib1g libffi8 libssl3
          libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libcrypt1)
echo "== arm64 root: ${#PACKAGES[@]} packages"
(cd "$ROOT/debs" && apt-get "${APT[@]}" download "${PACKAGES[@]}" >/dev/null 2>&1)
for deb in "$ROOT"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT/sysroot"; done
rm -rf "$ROOT/debs" "$ROOT/apt"
# qemu 7.2 shows the guest the host's /proc/cpuinfo, on which onnxruntime's CPU detection fails:
# the guest reads this one (under -L) instead, naming the emulated core (Neoverse N1).
mkdir -p "$ROOT/sysroot/proc"
cat > "$ROOT/sysroot/proc/cpuinfo" <<'CPUINFO'
processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1

CPUINFO
PYVER="${PYTHON#python}"
echo "== arm64 root: aarch64 wheels for Python $PYVER: ${PINS[*]}"
$PIP install --quiet --disable-pip-version-check --target "$ROOT/site" --no-deps \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --python-version "$PYVER" --implementation cp --only-binary=:all: "${PINS[@]}"
qemu-aarch64 -cpu neoverse-n1 -L "$ROOT/sysroot" -E "PYTHONPATH=$ROOT/site" "$ROOT/sysroot/usr/bin/$PYTHON" -c \
  "import json, platform, sys, numpy, onnxruntime, tokenizers; print(json.dumps({'python': platform.python_version(), 'machine': platform.machine(), 'onnxruntime': onnxruntime.__version__, 'numpy': numpy.__version__, 'tokenizers': tokenizers.__version__, 'stamp': sys.argv[1]}))" \
  "$STAMP" > "$ROOT/versions.json"
echo "arm64 root: $ROOT ($(cat "$ROOT/versions.json"))"

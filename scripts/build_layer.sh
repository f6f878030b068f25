#!/usr/bin/env bash
# Builds the Lambda layer zip (python/ + runtime dependencies) for one architecture, from
# manylinux_2_28 wheels (the python3.12 runtime runs Amazon Linux 2023, glibc 2.34), and the
# function folder (handler/ + the built model) for the zip-packaged template.
#
#   scripts/build_layer.sh [x86_64|arm64]
#   env: PYVER=3.12  MODEL_DIR=build/model  LAYER_OUT=layers/build  PIP="python3 -m pip"
#        BYTECODE_PYTHON=<a python$PYVER> (default: python$PYVER, a pyenv $PYVER, .venv-lambda)
#
# Both folders ship bytecode for the runtime's Python, compiled with hash-based invalidation
# (unchecked-hash: no source timestamp is read, so zip and layer file times do not matter):
# Lambda's /opt and /var/task are read-only, and without bytecode every cold start compiles
# fastapi, pydantic, starlette, powertools and numpy's Python from source.
#
# Fails when the unzipped layer plus function passes Lambda's 250 MB limit; prints sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${1:-x86_64}"
PYVER="${PYVER:-3.12}"
MODEL_DIR="${MODEL_DIR:-build/model}"
PIP="${PIP:-python3 -m pip}"
LIMIT=$((250 * 1024 * 1024))

case "$ARCH" in
  x86_64) MACHINE=x86_64 ;;
  arm64) MACHINE=aarch64 ;;
  *) echo "error: architecture must be x86_64 or arm64, got '$ARCH'" >&2; exit 2 ;;
esac

OUT="${LAYER_OUT:-layers/build}/$ARCH-py$PYVER"
rm -rf "$OUT"
mkdir -p "$OUT/layer/python" "$OUT/function"

# pip does not widen a custom --platform to older manylinux tags: list the ones glibc 2.28 runs.
PLATFORMS=(--platform "manylinux_2_28_$MACHINE" --platform "manylinux_2_17_$MACHINE"
           --platform "manylinux2014_$MACHINE")
COMMON=(--target "$OUT/layer/python" "${PLATFORMS[@]}" --python-version "$PYVER"
        --implementation cp --only-binary=:all: --no-compile --quiet --disable-pip-version-check)

$PIP install "${COMMON[@]}" -r layers/requirements.txt
$PIP install "${COMMON[@]}" --no-deps -r layers/requirements-nodeps.txt
# Nothing the runtime imports lives in these: console scripts, and onnxruntime's build-time
# Python tools (quantisation, transformer fusion), which only `python -m handler build` uses.
rm -rf "$OUT/layer/python/bin" "$OUT/layer/python/onnxruntime/transformers" \
  "$OUT/layer/python/onnxruntime/quantization" "$OUT/layer/python/onnxruntime/tools"
find "$OUT/layer/python" -name "__pycache__" -type d -prune -exec rm -rf {} +

# What Lambda runs, and nothing else: the compiler, the local tools and the tuner stay behind.
# The same list is in infra/Dockerfile's COPY lines; tests/infra/test_layer.py holds them equal.
RUNTIME_PACKAGES=(adapters api batch inference)
mkdir -p "$OUT/function/handler"
cp handler/*.py "$OUT/function/handler/"
for package in "${RUNTIME_PACKAGES[@]}"; do
  cp -r "handler/$package" "$OUT/function/handler/$package"
done
find "$OUT/function" -name "__pycache__" -type d -prune -exec rm -rf {} +

# Bytecode for the runtime's Python (pip compiled nothing: --no-compile, and it would have used
# this machine's Python).
bytecode_python() {
  if [ -n "${BYTECODE_PYTHON:-}" ]; then echo "$BYTECODE_PYTHON"; return; fi
  if "python$PYVER" -c "" >/dev/null 2>&1; then command -v "python$PYVER"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v="$(pyenv versions --bare 2>/dev/null | grep -E "^${PYVER//./\\.}(\.[0-9]+)?\$" | tail -1 || true)"
    if [ -n "$v" ] && [ -x "$(pyenv root)/versions/$v/bin/python$PYVER" ]; then
      echo "$(pyenv root)/versions/$v/bin/python$PYVER"; return
    fi
  fi
  if [ -x ".venv-lambda/bin/python" ]; then echo ".venv-lambda/bin/python"; return; fi
}
BC_PY="$(bytecode_python || true)"
if [ -n "$BC_PY" ] && [ "$("$BC_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYVER" ]; then
  "$BC_PY" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$OUT/layer/python" "$OUT/function" >/dev/null
  echo "bytecode: compiled for Python $PYVER (unchecked-hash)"
else
  echo "warning: no Python $PYVER to compile bytecode with (set BYTECODE_PYTHON): the layer ships source only, and every cold start compiles it" >&2
fi
if [ -f "$MODEL_DIR/manifest.json" ]; then
  cp -r "$MODEL_DIR" "$OUT/function/model"
else
  echo "note: no built model at $MODEL_DIR; the function folder has no model/ (build one first)" >&2
fi

# `sam build` of infra/template-zip.yaml builds the function with this Makefile (BuildMethod:
# makefile): a copy as is. SAM's Python builder would copy it without *.pyc and __pycache__.
printf 'build-ApiFunction:\n\tcp -R . "$(ARTIFACTS_DIR)"\n\trm -f "$(ARTIFACTS_DIR)/Makefile"\n' \
  >"$OUT/function/Makefile"

(cd "$OUT/layer" && zip -qr9 ../layer.zip python)

layer_bytes=$(du -sb "$OUT/layer" | cut -f1)
function_bytes=$(du -sb "$OUT/function" | cut -f1)
total=$((layer_bytes + function_bytes))
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }
echo "layer ($ARCH, python $PYVER): unzipped $(mb "$layer_bytes"), zipped $(mb "$(stat -c %s "$OUT/layer.zip")")"
echo "function (handler + model): $(mb "$function_bytes")"
echo "total unzipped: $(mb "$total") of $(mb "$LIMIT")"
echo "largest packages:"
du -sm "$OUT/layer/python"/* | sort -rn | awk 'NR <= 5 { print "  " $0 }'  # awk reads all: head would SIGPIPE sort under pipefail
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: layer + function unzipped is $(mb "$total"), over Lambda's 250 MB limit" >&2
  exit 1
fi
if [ "$PYVER" = "3.12" ] && [ -z "${LAYER_OUT:-}" ]; then
  ln -sfn "$ARCH-py$PYVER" layers/build/deploy  # what infra/template-zip.yaml deploys
fi
echo "$OUT/layer.zip"

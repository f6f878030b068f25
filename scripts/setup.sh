#!/usr/bin/env bash
# Creates .venv (once) and installs the project with everything the demo and the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch is optional (export of repositories without onnx/model.onnx, and the contract tests).
# Pinned: an unpinned torch resolves to a multi-GB CUDA build. WITH_TORCH=0 skips it.
extras="build,serve,dev"
if [ "${WITH_TORCH:-1}" = "1" ]; then
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" && extras="$extras,torch"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
touch "$stamp"

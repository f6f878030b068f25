#!/usr/bin/env bash
# Creates .venv (once) and installs the project with everything the demo and the tests use.
# Says what each step does; a first run takes 1-3 minutes (torch 2.13.0 CPU is the largest part),
# later runs return at once (a stamp keyed on pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "== setup: $VENV is up to date"
  exit 0
fi
started=$SECONDS
step() { echo "== setup [$((SECONDS - started))s]: $*"; }
step "first run: installing into $VENV, 1-3 minutes (pip runs quietly; nothing is wrong)"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
step "upgrading pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch is optional (export of repositories without onnx/model.onnx, and the contract tests).
# Pinned: an unpinned torch resolves to a multi-GB CUDA build. WITH_TORCH=0 skips it.
extras="build,serve,dev"
if [ "${WITH_TORCH:-1}" = "1" ]; then
  step "installing torch 2.13.0 (CPU build; the export path and contract tests; WITH_TORCH=0 skips it)"
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" && extras="$extras,torch"
fi
step "installing the project and its extras ($extras): onnxruntime, tokenizers, fastapi, moto, ..."
"$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
touch "$stamp"
step "done"

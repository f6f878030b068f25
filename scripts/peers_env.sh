#!/usr/bin/env bash
# Makes .venv-peers: the peers bench/peers.py measures the project against (onnxruntime's
# quantize_dynamic, CTranslate2, OpenVINO + nncf, optimum, transformers' pipeline on torch
# 2.13.0 CPU), from PyPI, in an environment of their own: optimum pins an older transformers
# than the project's tests use. About 2 minutes and 2.5 GB, once.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_VENV="${PEERS_VENV:-.venv-peers}"
PYTHON="${PYTHON:-python3}"
stamp="$PEERS_VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "$PEERS_VENV is up to date"
  exit 0
fi
[ -x "$PEERS_VENV/bin/python" ] || "$PYTHON" -m venv "$PEERS_VENV"
"$PEERS_VENV/bin/python" -m pip install --quiet --upgrade pip
# Pinned: an unpinned torch resolves to a multi-GB CUDA build.
"$PEERS_VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$PEERS_VENV/bin/python" -m pip install --quiet ".[peers]"
touch "$stamp"
echo "$PEERS_VENV is ready: python bench/peers.py finds it (or set PEERS_PYTHON)"

#!/usr/bin/env bash
# Sets up .venv if needed, then lints, type-checks and runs the whole test suite (slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh tests
VENV="${VENV:-.venv}"
# The interpreter that runs the function under awslambdaric (tests/lambda_runtime).
export LAMBDA_PYTHON="${LAMBDA_PYTHON:-$PWD/${LAMBDA_VENV:-$VENV-lambda}/bin/python}"
# Where sam, checkov, hadolint, actionlint, zizmor and bandit are (tests/infra).
export TOOLS_BIN="${TOOLS_BIN:-$PWD/${TOOLS_VENV:-$VENV-tools}/bin}"
"$VENV/bin/ruff" check handler tests scripts bench
"$VENV/bin/ruff" format --check handler tests scripts bench
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"

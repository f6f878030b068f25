#!/usr/bin/env bash
# Sets up .venv if needed, then lints, type-checks and runs the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${VENV:-.venv}"
"$VENV/bin/ruff" check handler tests scripts bench
"$VENV/bin/ruff" format --check handler tests scripts bench
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"

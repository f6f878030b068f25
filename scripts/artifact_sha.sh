#!/usr/bin/env bash
# The built artifact's sha256 (model.onnx and its weights) for the stand-in, per target and
# fidelity: a refactor of the compiler must leave every line unchanged. Run it before and after
# (same host, same inputs) and diff the outputs.
#
#   scripts/artifact_sha.sh > before.txt; ...; scripts/artifact_sha.sh > after.txt; diff before.txt after.txt
set -euo pipefail
cd "$(dirname "$0")/.."
STANDIN="${STANDIN_MODEL:-../shared/models/distilbert-mini-sst2}"
EVAL="${STANDIN_EVAL:-../shared/data/sst2-validation-a.tsv}"
PY="${PY:-.venv/bin/python}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for spec in "x86-avx2 balanced" "x86-vnni balanced" "x86-avx2 high"; do
  set -- $spec
  dir="$OUT/$1-$2"
  "$PY" -m handler build --model "$STANDIN" --eval "$EVAL" --target "$1" --fidelity "$2" \
    --out "$dir" --verify-on host >/dev/null 2>"$dir.log" || { cat "$dir.log" >&2; exit 1; }
  echo "$1 $2 $(sha256sum "$dir/model.onnx" | cut -d' ' -f1) $(sha256sum "$dir/model.onnx.data" | cut -d' ' -f1)"
done

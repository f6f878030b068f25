#!/usr/bin/env bash
# The main job, locally: build a verified int8 model, then classify text through the real
# lambda_handler, on the API path (an HTTP API event) and the S3 path (an upload to a local
# moto S3 server). Sets up .venv on first use.
#
#   MODEL=<hub id or folder> EVAL=<text<TAB>label file> TARGET=x86-avx2 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
MODEL="${MODEL:-distilbert-base-uncased-finetuned-sst-2-english}"
OUT="${OUT:-build/model}"

args=(build --model "$MODEL" --out "$OUT" --target "${TARGET:-x86-avx2}")
if [ -n "${EVAL:-}" ]; then args+=(--eval "$EVAL"); fi
echo "== build: $MODEL -> $OUT"
"$PY" -m handler "${args[@]}"
"$PY" -m handler verify --model "$OUT"

echo "== API: HTTP API event through lambda_handler (tests/events/apigw-http-classify.json)"
MODEL_DIR="$OUT" "$PY" -m handler invoke --event tests/events/apigw-http-classify.json \
  | grep -v '^{"_aws"' | grep -v '"level":'

echo "== S3: upload to a local S3 server (moto), S3 event through lambda_handler"
MODEL_DIR="$OUT" "$PY" scripts/demo_s3.py

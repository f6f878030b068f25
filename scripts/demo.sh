#!/usr/bin/env bash
# The main job, locally: build a verified int8 model, then classify text through the real
# lambda_handler, on the API path (an HTTP API event) and the S3 path (an upload to a local
# moto S3 server). Sets up .venv on first use (`scripts/setup.sh demo`: about a minute, once);
# the build takes about a minute for the stand-in, a few for DistilBERT-base.
#
#   MODEL=<hub id or folder> EVAL=<text<TAB>label file> TARGET=x86-avx2 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== demo: set up .venv (first run only), build a model into ${OUT:-build/model}, classify through lambda_handler"
scripts/setup.sh demo
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
MODEL="${MODEL:-distilbert-base-uncased-finetuned-sst-2-english}"
OUT="${OUT:-build/model}"

args=(build --model "$MODEL" --out "$OUT" --target "${TARGET:-x86-avx2}")
if [ -n "${EVAL:-}" ]; then args+=(--eval "$EVAL"); fi
echo "== build: $MODEL -> $OUT (fetch, fuse, quantise, verify against fp32: about a minute for the stand-in)"
# The build's hints name its options; here they are this script's variables.
"$PY" -m handler "${args[@]}" 2> >(sed -u 's/--model PATH/MODEL=PATH/; s/pass --eval FILE/set EVAL=FILE/' >&2)
echo "== verify: $OUT's files against its manifest"
"$PY" -m handler verify --model "$OUT"

echo "== API: HTTP API event through lambda_handler (tests/events/apigw-http-classify.json)"
# stdout is the handler's response; stderr (the function's logs and EMF metric lines, as
# CloudWatch would get them) is shown without the metric lines.
MODEL_DIR="$OUT" "$PY" -m handler invoke --event tests/events/apigw-http-classify.json \
  2> >(grep -v '"_aws"' >&2)

echo "== S3: upload to a local S3 server (moto), S3 event through lambda_handler"
MODEL_DIR="$OUT" "$PY" scripts/demo_s3.py

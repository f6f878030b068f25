#!/usr/bin/env bash
# Regenerates the event fixtures that AWS SAM CLI can generate, with the real `sam local
# generate-event` (SAM CLI 1.170.0: pip install aws-sam-cli==1.170.0). The other files in this
# folder are hand-written for shapes SAM has no generator for (REST API custom domain with a base
# path, Function URL, EventBridge, base64 HTTP API body, warm-up, unknown), and are checked
# against Powertools' and AWS's documented samples by the tests.
#
#   SAM=sam tests/events/generate.sh
set -euo pipefail
cd "$(dirname "$0")"
SAM="${SAM:-sam}"
export SAM_CLI_TELEMETRY=0
gen() { "$SAM" local generate-event "$@"; }

# SAM URL-encodes the key itself, as S3 does.
KEY='incoming/my reviews été.jsonl'
gen apigateway http-api-proxy --method POST --path classify \
  --body '{"inputs": "I loved this film, it was wonderful.", "parameters": {"top_k": null}}' \
  > apigw-http-classify.json
gen apigateway aws-proxy --method POST --path classify --resource '{proxy+}' \
  --body '{"inputs": ["I loved this film, it was wonderful.", "A dull, boring mess."]}' \
  > apigw-rest-classify.json
gen alb request --method POST --path classify \
  --body '{"inputs": ["Wonderful!", "Boring."], "parameters": {"top_k": 1}}' > alb-classify.json
gen s3 put --bucket classifier-input --key "$KEY" > s3-put.json
# SQS and SNS carry the S3 notification as a JSON string. SAM pastes --body/--message into its
# template unescaped (a JSON value breaks it), so they are generated around a placeholder that
# is then replaced by the generated s3 put, compacted, as a properly escaped JSON string.
gen sqs receive-message --queue-name classifier-uploads --body NOTIFICATION > sqs-s3.json
gen sns notification --topic classifier-uploads --subject "Amazon S3 Notification" \
  --message NOTIFICATION > sns-s3.json
python3 - <<'PY'
import json
notification = json.dumps(json.load(open("s3-put.json")))
for name, field in (("sqs-s3.json", ("body",)), ("sns-s3.json", ("Sns", "Message"))):
    event = json.load(open(name))
    for record in event["Records"]:
        holder = record
        for key in field[:-1]:
            holder = holder[key]
        assert holder[field[-1]] == "NOTIFICATION", (name, holder[field[-1]])
        holder[field[-1]] = notification
    with open(name, "w") as out:
        json.dump(event, out, indent=2, ensure_ascii=False)
        out.write("\n")
PY

"""A smoke request against a deployed stack: one SigV4-signed POST /classify (ApiAuth=IAM) with
the caller's AWS credentials, and (--alias) the same text sent straight to the API function's
live alias, whose answer names the version that served it; exits non-zero unless every answer
has the pipeline's shape and the alias ran the version it points at.

    python scripts/smoke.py https://abc123.execute-api.us-east-1.amazonaws.com/ [--region R]
        [--alias arn:aws:lambda:us-east-1:123456789012:function:stack-api:live]
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import Any


def signed_request(url: str, body: bytes, region: str) -> urllib.request.Request:
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    headers = {"content-type": "application/json"}
    aws = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(boto3.Session().get_credentials(), "execute-api", region).add_auth(aws)
    return urllib.request.Request(url, data=body, headers=dict(aws.headers), method="POST")


def check(answer: Any) -> str | None:
    """None if `answer` is the pipeline's answer for one text, else what is wrong."""
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        return f"expected [{{label, score}}], got {answer!r}"
    one = answer[0]
    if not isinstance(one.get("label"), str) or not isinstance(one.get("score"), float):
        return f"expected a label and a score, got {one!r}"
    return None


def alias_event(text: str) -> dict[str, Any]:
    """POST /classify as the HTTP API (payload 2.0) sends it to the function."""
    return {
        "version": "2.0",
        "routeKey": "POST /classify",
        "rawPath": "/classify",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "smoke.check"},
        "requestContext": {
            "http": {"method": "POST", "path": "/classify", "protocol": "HTTP/1.1"},
            "requestId": "smoke",
            "routeKey": "POST /classify",
            "stage": "$default",
        },
        "body": json.dumps({"inputs": text}),
        "isBase64Encoded": False,
    }


def through_alias(client: Any, alias_arn: str, text: str) -> tuple[Any, str | None]:
    """(answer, problem): the alias invoked with one text; the version it ran must be the one
    the alias points at (a rolled-back or half-shifted release shows here)."""
    response = client.invoke(FunctionName=alias_arn, Payload=json.dumps(alias_event(text)))
    payload = json.loads(response["Payload"].read())
    if response.get("FunctionError"):
        return payload, f"the alias failed: {payload}"
    name, _, alias = alias_arn.rpartition(":")
    pointed = client.get_alias(FunctionName=name, Name=alias)
    weights = pointed.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {}
    expected = {pointed["FunctionVersion"], *weights}
    ran = response.get("ExecutedVersion")
    if ran not in expected:
        return payload, f"the alias ran version {ran}, it points at {sorted(expected)}"
    if not isinstance(payload, dict) or payload.get("statusCode") != 200:
        return payload, f"expected status 200, got {payload}"
    return json.loads(payload["body"]), None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("api_url", help="the stack's ApiUrl output")
    ap.add_argument("--region", default=None, help="default: the URL's region")
    ap.add_argument("--alias", help="the stack's ApiAliasArn output: also invoke the alias itself")
    args = ap.parse_args(argv)
    url = args.api_url.rstrip("/") + "/classify"
    region = args.region or url.split(".execute-api.")[1].split(".")[0]
    body = json.dumps({"inputs": "A smoke test that went perfectly."}).encode()
    with urllib.request.urlopen(signed_request(url, body, region), timeout=30) as response:  # nosec B310 - an https URL the caller names
        answer = json.load(response)
    problem = check(answer)
    print(json.dumps({"url": url, "answer": answer, "ok": problem is None}))
    if problem is None and args.alias:
        import boto3

        client = boto3.client("lambda", region_name=region)
        answer, problem = through_alias(client, args.alias, "A smoke test that went perfectly.")
        problem = problem or check(answer)
        print(json.dumps({"alias": args.alias, "answer": answer, "ok": problem is None}))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

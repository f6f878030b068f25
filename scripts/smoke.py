"""A smoke request against a deployed stack: one SigV4-signed POST /classify (ApiAuth=IAM) with
the caller's AWS credentials; exits non-zero unless the answer has the pipeline's shape.

    python scripts/smoke.py https://abc123.execute-api.us-east-1.amazonaws.com/ [--region R]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("api_url", help="the stack's ApiUrl output")
    ap.add_argument("--region", default=None, help="default: the URL's region")
    args = ap.parse_args(argv)
    url = args.api_url.rstrip("/") + "/classify"
    region = args.region or url.split(".execute-api.")[1].split(".")[0]
    body = json.dumps({"inputs": "A smoke test that went perfectly."}).encode()
    with urllib.request.urlopen(signed_request(url, body, region), timeout=30) as response:  # nosec B310 - an https URL the caller names
        answer = json.load(response)
    problem = check(answer)
    print(json.dumps({"url": url, "answer": answer, "ok": problem is None}))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

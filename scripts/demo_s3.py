"""Upload a JSON Lines file to a local S3 (moto server on 127.0.0.1), send lambda_handler the S3
notification that upload would raise, and print the predictions it wrote."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import quote_plus

from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
INPUT, OUTPUT, KEY = "demo-input", "demo-output", "incoming/my reviews.jsonl"
RECORDS = [
    {"id": "a", "text": "An absolute delight from start to finish."},
    {"id": "b", "text": "I want those two hours of my life back."},
    {"id": "c", "text": ""},
    {"id": "d", "text": "The soundtrack was fine, the plot less so."},
]


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request log
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL_S3=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
        AWS_DEFAULT_REGION="us-east-1",
        INPUT_BUCKET=INPUT,
        OUTPUT_BUCKET=OUTPUT,
        OUTPUT_PREFIX="predictions/",
    )
    try:
        from handler import lambda_handler
        from handler.adapters.s3_store import make_client
        from handler.local.context import LocalContext

        s3 = make_client()
        for bucket in (INPUT, OUTPUT):
            s3.create_bucket(Bucket=bucket)
        body = "".join(json.dumps(r) + "\n" for r in RECORDS) + "{not json}\n"
        s3.put_object(Bucket=INPUT, Key=KEY, Body=body.encode())
        etag = s3.head_object(Bucket=INPUT, Key=KEY)["ETag"].strip('"')
        event = json.loads((ROOT / "tests/events/s3-put.json").read_text())
        obj = event["Records"][0]["s3"]
        obj["bucket"]["name"], obj["object"]["key"], obj["object"]["eTag"] = (
            INPUT,
            quote_plus(KEY, safe="/"),
            etag,
        )
        with redirect_stdout(io.StringIO()):  # EMF metrics and logs, as CloudWatch would get them
            result = lambda_handler(event, LocalContext())
        summary = result["results"][0]
        print(f"s3://{INPUT}/{KEY}: {summary['records']} records, {summary['errors']} errors")
        out = s3.get_object(Bucket=OUTPUT, Key=summary["output"]["key"])["Body"].read().decode()
        print(f"s3://{OUTPUT}/{summary['output']['key']}:")
        sys.stdout.write(out)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

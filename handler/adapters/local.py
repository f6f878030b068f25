"""Run lambda_handler on an event file, as `sam local invoke -e FILE` does, without Docker."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

# Added by `python -m handler invoke` only, never by the function: Lambda gets the response as is.
FAILURE_REASONS = "localFailureReasons"


@dataclass
class LocalContext:
    """The attributes of Lambda's context object that this project and Powertools read."""

    function_name: str = "text-classifier-local"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_s: float = 900.0
    _start: float = field(default_factory=time.monotonic)
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/text-classifier-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout_s - (time.monotonic() - self._start)) * 1000)


# (bucket, key) -> {"etag": ..., "size": ...}, or None when there is no such object
Head = Callable[[str, str], dict[str, Any] | None]


def current_objects(event: Any, head: Head) -> Any:
    """The event with every S3 object reference's eTag and size replaced by the object's current
    ones: what a fresh upload's notification would carry. Walks S3 notifications, EventBridge
    "Object Created" events and the JSON strings that wrap them (SQS bodies, SNS messages).

    Locally, `sam local generate-event s3 put` writes a made-up eTag, which the function rightly
    refuses as "changed since the event"; this makes such an event name the object as it is now.
    """
    if isinstance(event, list):
        return [current_objects(item, head) for item in event]
    if isinstance(event, str):
        stripped = event.lstrip()
        if not stripped.startswith("{"):
            return event
        try:
            inner = json.loads(event)
        except ValueError:
            return event
        resolved = current_objects(inner, head)
        return json.dumps(resolved) if resolved != inner else event
    if not isinstance(event, dict):
        return event
    out = {k: current_objects(v, head) for k, v in event.items()}
    # An object that is not there (a removal event, a typo) is left as the event names it.
    s3 = out.get("s3")
    if isinstance(s3, dict) and isinstance(s3.get("object"), dict):  # an S3 notification record
        obj = dict(s3["object"])
        now = head(s3["bucket"]["name"], unquote_plus(obj["key"]))
        if now is not None:
            obj["eTag"], obj["size"] = now["etag"], now["size"]
            obj.pop("versionId", None)
            out["s3"] = {**s3, "object": obj}
    detail = out.get("detail")
    if out.get("source") == "aws.s3" and isinstance(detail, dict) and "object" in detail:
        obj = dict(detail["object"])
        now = head(detail["bucket"]["name"], unquote_plus(obj["key"]))
        if now is not None:
            obj["etag"], obj["size"] = now["etag"], now["size"]
            obj.pop("version-id", None)
            out["detail"] = {**detail, "object": obj}
    return out


def s3_head(client: Any = None) -> Head:
    from botocore.exceptions import ClientError

    from handler.adapters.s3_store import make_client

    s3 = client or make_client()

    def head(bucket: str, key: str) -> dict[str, Any] | None:
        try:
            meta = s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return {"etag": meta["ETag"].strip('"'), "size": meta["ContentLength"]}

    return head


class _Reasons(logging.Handler):
    """Collects what the function logged at WARNING and above during one invocation."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reasons(self) -> list[dict[str, Any]]:
        out = []
        for r in self.records:
            reason: dict[str, Any] = {"level": r.levelname, "message": r.getMessage()}
            for attr in ("message_id", "key"):
                if hasattr(r, attr):
                    reason[attr] = getattr(r, attr)
            if r.exc_info and r.exc_info[1] is not None:
                exc = r.exc_info[1]
                reason["error"] = f"{type(exc).__name__}: {exc}"
            out.append(reason)
        return out


@contextmanager
def _collect_reasons() -> Iterator[_Reasons]:
    from handler.observability import SERVICE, logger

    collector = _Reasons()
    std = logging.getLogger(getattr(logger, "service", SERVICE))
    std.addHandler(collector)
    try:
        yield collector
    finally:
        std.removeHandler(collector)


def invoke_file(path: Path, current_etag: bool = False) -> Any:
    """lambda_handler on the event in `path`. When a batch event's message or object failed or
    was skipped, what the function logged about it (WARNING and above) is added to the response
    under `localFailureReasons` (local output only)."""
    from handler.entry import lambda_handler

    event = json.loads(path.read_text(encoding="utf-8"))
    if current_etag:
        event = current_objects(event, s3_head())
    with _collect_reasons() as collected:
        response = invoke(lambda_handler, event)
    # Batch responses only (HTTP answers carry their own errors): a failed or skipped message or
    # object says why in the output, not only in a log line.
    if isinstance(response, dict) and "statusCode" not in response and collected.records:
        response = {**response, FAILURE_REASONS: collected.reasons()}
    return response


def invoke(handler: Any, event: Any, context: LocalContext | None = None) -> Any:
    return handler(event, context or LocalContext())


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, host: str
) -> dict[str, Any]:
    """The event API Gateway's HTTP API (payload format 2.0) sends for one request."""
    import base64
    import datetime

    path, _, query = target.partition("?")
    now = datetime.datetime.now(datetime.UTC)
    lowered: dict[str, str] = {}
    cookies = []
    for name, value in headers.items():
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        # API Gateway joins repeated headers with commas.
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    try:
        text: str | None = body.decode("utf-8") if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if cookies:
        event["cookies"] = cookies
    if text is not None:
        event["body"] = text
    return event


def serve_through_lambda(handler: Any, host: str, port: int) -> Any:
    """An HTTP server that turns each request into an HTTP API event for `handler` and its
    response back into HTTP, as `sam local start-api` does, without Docker. One request at a
    time through the function, like one Lambda execution environment (connections are served
    on threads, so a client's idle keep-alive connection blocks nobody). Returns the server
    (call serve_forever)."""
    import asyncio
    import base64
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    # The execution environment: one thread, with the event loop Mangum expects of Lambda's
    # main thread; requests queue for it.
    environment = ThreadPoolExecutor(
        max_workers=1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop())
    )

    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            event = http_api_event(
                self.command,
                self.path,
                dict(self.headers.items()),
                body,
                self.headers.get("host", f"{host}:{port}"),
            )
            try:
                response = environment.submit(handler, event, LocalContext()).result()
            except Exception as exc:  # Lambda's answer to a function error: 502 from the API
                response = {
                    "statusCode": 502,
                    "headers": {"content-type": "application/json"},
                    "body": json.dumps({"message": "Internal Server Error", "error": str(exc)}),
                }
            raw = response.get("body") or ""
            payload = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
            self.send_response(int(response.get("statusCode", 200)))
            for name, value in (response.get("headers") or {}).items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, str(value))
            for cookie in response.get("cookies") or []:
                self.send_header("set-cookie", cookie)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("handler.local").info(format, *args)

    server = ThreadingHTTPServer((host, port), Gateway)
    server.daemon_threads = True
    return server

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


def lambda_gateway(handler: Any, max_body_bytes: int) -> Any:
    """An ASGI app that turns each HTTP request into an HTTP API event for `handler` and its
    response back into HTTP, as `sam local start-api` does, without Docker. Served by uvicorn,
    so HTTP/1.1 framing (keep-alive, HEAD, chunked bodies, bad Content-Length) is a real
    server's; a body over `max_body_bytes` is refused on its Content-Length or while it streams,
    as API Gateway refuses payloads over its own limit. One request at a time through the
    function, like one Lambda execution environment."""
    import asyncio
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from handler.api.guard import Disconnected, bounded_body, refusal
    from handler.errors import InputTooLarge

    # The execution environment: one thread, with the event loop Mangum expects of Lambda's
    # main thread; requests queue for it.
    environment = ThreadPoolExecutor(
        max_workers=1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop())
    )

    async def respond(
        send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, head: bool
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def refuse(send: Any, status: int, body: bytes, head: bool) -> None:
        await respond(send, status, [(b"content-type", b"application/json")], body, head)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        head = scope["method"] == "HEAD"
        try:
            body = await bounded_body(scope, receive, max_body_bytes)
        except Disconnected:
            return  # nobody to answer
        if isinstance(body, InputTooLarge):
            await refuse(send, *refusal(body), head)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            joiner = "; " if name.lower() == "cookie" else ","
            headers[name] = f"{headers[name]}{joiner}{value}" if name in headers else value
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        host = headers.get("host", "localhost")
        event = http_api_event(
            scope["method"], f"{target}?{query}" if query else target, headers, body, host
        )
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(environment, handler, event, LocalContext())
        except Exception as exc:  # Lambda's answer to a function error: 502 from the API
            error = {"message": "Internal Server Error", "error": str(exc)}
            await refuse(send, 502, json.dumps(error).encode(), head)
            return
        raw = response.get("body") or ""
        payload = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        out = [
            (str(name).lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in (response.get("headers") or {}).items()
            if str(name).lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        out += [(b"set-cookie", c.encode("latin-1")) for c in response.get("cookies") or []]
        await respond(send, int(response.get("statusCode", 200)), out, payload, head)

    return app

"""Run lambda_handler on an event file, as `sam local invoke -e FILE` does, without Docker."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from handler.batch import refs
from handler.local.context import LocalContext

# Added by `python -m handler invoke` only, never by the function: Lambda gets the response as is.
FAILURE_REASONS = "localFailureReasons"


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
    shape = refs.shape_of(out)
    if shape is None:
        return out
    named = refs.ref(out, shape)
    now = head(named.bucket, named.key)
    # An object that is not there (a removal event, a typo) is left as the event names it.
    return out if now is None else refs.with_object(out, shape, now["etag"], now["size"])


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

"""S3 notifications (direct, via SQS, via EventBridge) -> the batch job, one object at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from handler.batch.job import Continue, Destination, ObjectRef, Store, run
from handler.config import Settings
from handler.errors import ConfigError, ObjectChanged
from handler.observability import logger
from handler.runtime import LoadedModel


def refs_from_s3_event(event: dict[str, Any]) -> list[ObjectRef]:
    """ObjectCreated records of an S3 notification; keys arrive URL-encoded (spaces as '+')."""
    refs = []
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        obj = s3["object"]
        refs.append(
            ObjectRef(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(obj["key"]),
                version_id=obj.get("versionId") or None,
                etag=obj.get("eTag") or None,
            )
        )
    return refs


def refs_from_eventbridge(event: dict[str, Any]) -> list[ObjectRef]:
    detail = event["detail"]
    obj = detail["object"]
    return [
        ObjectRef(
            bucket=detail["bucket"]["name"],
            key=unquote_plus(obj["key"]),
            version_id=obj.get("version-id") or None,
            etag=obj.get("etag") or None,
        )
    ]


def unwrap(body: dict[str, Any]) -> dict[str, Any]:
    """The S3 notification inside an SNS envelope (raw message delivery off), or the body itself."""
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        inner: dict[str, Any] = json.loads(body["Message"])
        return inner
    return body


class BatchAdapter:
    def __init__(
        self,
        settings: Settings,
        model: LoadedModel,
        store: Store,
        continue_with: Callable[[Any], Continue | None] | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.store = store
        self.continue_with = continue_with  # context -> how to re-invoke this function

    def _destination(self) -> Destination:
        if self.settings.output_bucket is None:
            raise ConfigError("OUTPUT_BUCKET is not set: the S3 batch path has nowhere to write")
        return Destination(self.settings.output_bucket, self.settings.output_prefix)

    def process(
        self, ref: ObjectRef, context: Any, resume: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        dest = self._destination()
        if self.settings.output_could_trigger(ref.bucket, ref.key):
            logger.error("refused: event for this function's own output", extra={"key": ref.key})
            return {"status": "refused", "reason": "object is this function's own output"}
        time_left = getattr(context, "get_remaining_time_in_millis", None)
        try:
            return run(
                ref,
                self.model.classifier,
                self.store,
                dest,
                self.model.manifest_sha256,
                chunk_size=self.settings.batch_chunk_size,
                time_left_ms=time_left,
                margin_ms=self.settings.batch_time_margin_ms,
                resume=resume,
                continue_with=self.continue_with(context) if self.continue_with else None,
            )
        except ObjectChanged as exc:
            # Not retryable: the newer object has its own event. Said loudly, never classified.
            logger.warning(str(exc))
            return {"status": "skipped", "reason": str(exc)}

    def handle_s3(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"results": [self.process(ref, context) for ref in refs_from_s3_event(event)]}

    def handle_eventbridge(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"results": [self.process(ref, context) for ref in refs_from_eventbridge(event)]}

    def handle_continuation(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        state = event["continuation"]
        ref = ObjectRef(**state["source"])
        return self.process(ref, context, resume=state)

    def handle_sns(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """S3 notifications fanned out through SNS (S3 -> SNS -> Lambda)."""
        results = []
        for record in event["Records"]:
            body = unwrap(json.loads(record["Sns"]["Message"]))
            results += [self.process(ref, context) for ref in refs_from_s3_event(body)]
        return {"results": results}

    def handle_sqs(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """S3 notifications delivered through SQS (directly, or S3 -> SNS -> SQS), with partial
        batch failure reporting."""
        failures = []
        for message in event["Records"]:
            try:
                body = unwrap(json.loads(message["body"]))
                if body.get("Event") == "s3:TestEvent":
                    continue
                for ref in refs_from_s3_event(body):
                    self.process(ref, context)
            except Exception:  # reported per message so SQS retries only the failed ones
                logger.exception("message failed", extra={"message_id": message.get("messageId")})
                failures.append({"itemIdentifier": message["messageId"]})
        return {"batchItemFailures": failures}

"""S3 notifications (direct, via SQS, via EventBridge) -> the batch job, one object at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from handler import strict_json
from handler.batch.formats import detect
from handler.batch.job import Continue, Destination, ObjectRef, Store, run
from handler.config import Settings
from handler.errors import ConfigError, InvalidInput, MalformedEvent, ObjectChanged
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


def _json_object(text: object, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise MalformedEvent(f"{what} is {type(text).__name__}, expected a JSON string")
    try:
        value = strict_json.loads(text)
    except strict_json.JSONProblem as exc:
        raise MalformedEvent(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedEvent(f"{what} is a JSON {type(value).__name__}, expected an object")
    return value


def unwrap(body: dict[str, Any], what: str) -> dict[str, Any]:
    """The S3 notification inside an SNS envelope (raw message delivery off), or the body itself."""
    if body.get("Type") == "Notification":
        return _json_object(body.get("Message"), f"{what}: SNS envelope's Message")
    return body


def s3_notification(body: dict[str, Any], what: str) -> dict[str, Any] | None:
    """`body` if it is an S3 notification; None for S3's test event; else MalformedEvent."""
    if body.get("Event") == "s3:TestEvent":
        return None
    records = body.get("Records")
    if not (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    ):
        keys = ", ".join(sorted(map(str, body))[:10]) or "none"
        raise MalformedEvent(f"{what} is not an S3 notification (keys: {keys})")
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
        try:
            detect(ref.key)
        except InvalidInput as exc:
            # Reachable through EventBridge, SNS or a notification rule of the user's own:
            # retrying cannot change a key's suffix, so it is skipped and said, not raised.
            logger.warning("skipped: unsupported file type", extra={"key": ref.key})
            return {"status": "skipped", "reason": str(exc)}
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
        for i, record in enumerate(event["Records"]):
            sns = record.get("Sns") if isinstance(record, dict) else None
            what = f"SNS record {i}"
            if not isinstance(sns, dict):
                raise MalformedEvent(f"{what} has no 'Sns' object")
            body = s3_notification(_json_object(sns.get("Message"), f"{what}: Message"), what)
            if body is not None:
                results += [self.process(ref, context) for ref in refs_from_s3_event(body)]
        return {"results": results}

    def handle_sqs(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """S3 notifications delivered through SQS (directly, or S3 -> SNS -> SQS), with partial
        batch failure reporting."""
        failures = []
        for message in event["Records"]:
            message_id = message.get("messageId")
            what = f"SQS message {message_id}"
            try:
                body = s3_notification(unwrap(_json_object(message.get("body"), what), what), what)
                for ref in refs_from_s3_event(body) if body is not None else []:
                    self.process(ref, context)
            except MalformedEvent as exc:
                # A poison message: never deleted silently. Reported as failed, it returns to
                # the queue until the redrive policy moves it to the dead-letter queue.
                logger.error("poison message: %s", exc, extra={"message_id": message_id})
                failures.append({"itemIdentifier": message_id})
            except Exception:  # reported per message so SQS retries only the failed ones
                logger.exception("message failed", extra={"message_id": message_id})
                failures.append({"itemIdentifier": message_id})
        return {"batchItemFailures": failures}

"""S3 notifications (direct, via SQS, via EventBridge) -> the batch job, one object at a time."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from handler import strict_json
from handler.batch import refs
from handler.batch.formats import Inflation, detect
from handler.batch.job import NDJSON, PREDICTIONS, Destination, Done, HandOff, LongTexts, run
from handler.batch.refs import ObjectRef
from handler.config import Settings
from handler.errors import (
    ConfigError,
    InvalidInput,
    MalformedEvent,
    ObjectChanged,
    ObjectsFailed,
    UnsupportedEvent,
)
from handler.loading import LoadedModel
from handler.observability import logger

if TYPE_CHECKING:
    from mangum.types import LambdaContext

    from handler.batch.shards import ShardStore


def created_records(event: dict[str, Any]) -> list[Any]:
    """An S3 notification's ObjectCreated records (each parsed on its own, when processed)."""
    return [
        record
        for record in event.get("Records", [])
        if not isinstance(record, dict)
        or str(record.get("eventName", "")).startswith("ObjectCreated")
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
    def __init__(self, settings: Settings, model: LoadedModel, store: ShardStore) -> None:
        self.settings = settings
        self.model = model
        self.store = store

    def _destination(self) -> Destination:
        if self.settings.output_bucket is None:
            raise ConfigError("OUTPUT_BUCKET is not set: the S3 batch path has nowhere to write")
        return Destination(self.settings.output_bucket, self.settings.output_prefix)

    def _hand_off(self, dest: Destination) -> HandOff | None:
        """How an object too big for one invocation reaches the state machine (if there is one)."""
        arn = self.settings.state_machine_arn
        if arn is None:
            return None

        def hand_off(
            pinned: ObjectRef, why: str, done: Done | None, how: LongTexts
        ) -> dict[str, Any]:
            from handler.adapters.s3_store import start_execution
            from handler.batch.shards import execution_name, make_job

            fmt, gz = detect(pinned.key)
            job = make_job(
                pinned,
                fmt,
                gz,
                dest,
                dest.bucket,
                self.settings.work_prefix,
                self.model.manifest_sha256,
                self.settings.shard_records,
                self.settings.batch_chunk_size,
                done,
                how,
            )
            if done is not None and job.resume is not None:  # kept: the shards continue after it
                self.store.upload_file(job.work.bucket, job.resume["part"], done.path, NDJSON)
            started = start_execution(arn, execution_name(job), {"job": job.to_json()})
            logger.info(
                "handed to the distributed path",
                extra={
                    "key": pinned.key,
                    "bytes": pinned.size,
                    "why": why,
                    "records_done": job.done_records,
                    **started,
                },
            )
            return {
                **started,
                "why": why,
                "job": job.id,
                "source": asdict(job.source),
                "records_done": job.done_records,
            }

        return hand_off

    def process(self, ref: ObjectRef, context: LambdaContext) -> dict[str, Any]:
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
        expected = self.settings.input_bucket
        if expected is not None and ref.bucket != expected:
            # An event rule or topic of someone else's: never classified (and never retried).
            logger.error("refused: object outside INPUT_BUCKET", extra={"bucket": ref.bucket})
            return {
                "status": "refused",
                "reason": f"object is in bucket {ref.bucket!r}, not INPUT_BUCKET={expected!r}",
            }
        out_key = dest.key(ref.key, PREDICTIONS)
        if self.settings.in_work_area(dest.bucket, out_key):
            logger.error("refused: output would land in the work area", extra={"key": ref.key})
            return {
                "status": "refused",
                "reason": f"predictions for this key would be written to {out_key!r}, inside "
                f"WORK_PREFIX={self.settings.work_prefix!r}, which the distributed path sweeps: "
                "set OUTPUT_PREFIX",
            }
        try:
            return run(
                ref,
                self.model.classifier,
                self.store,
                dest,
                self.model.manifest_sha256,
                chunk_size=self.settings.batch_chunk_size,
                time_left_ms=getattr(context, "get_remaining_time_in_millis", None),
                margin_ms=self.settings.batch_time_margin_ms,
                hand_off=self._hand_off(dest),
                hand_off_bytes=self.settings.distributed_min_bytes,
                inflation=self._inflation(),
                how=LongTexts(self.settings.long_text, self.settings.max_windows_per_text),
            )
        except ObjectChanged as exc:
            # Not retryable: the newer object has its own event. Said loudly, never classified.
            logger.warning(str(exc))
            return {"status": "skipped", "reason": str(exc)}

    def handle_distributed(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        """A step of the state machine: {"distributed": "plan"|"shard"|"merge", "job": ...}."""
        from handler.batch import shards

        step = event.get("distributed")
        job = shards.Job.from_json(event.get("job"), step)
        digest = self.model.manifest_sha256
        if step == "plan":
            return shards.plan(job, self.store, digest, self._inflation())
        if step == "shard":
            item = event.get("shard")
            if not isinstance(item, dict):
                raise MalformedEvent("distributed 'shard' event without its 'shard' item")
            return shards.shard(job, item, self.model.classifier, self.store, digest)
        if step == "merge":
            return shards.merge(job, self.store, digest)
        raise UnsupportedEvent(f"unknown distributed step {step!r}: expected plan, shard or merge")

    def _inflation(self) -> Inflation:
        return Inflation(
            max_bytes=self.settings.max_decompressed_bytes,
            max_ratio=self.settings.max_compression_ratio,
        )

    def process_records(
        self, notification: dict[str, Any], context: LambdaContext
    ) -> list[dict[str, Any]]:
        """Every object of one S3 notification, each tried: one that fails (missing, malformed,
        throttled) does not keep the others from being classified. The failures are raised
        together after the others are done; a retry skips the finished ones (idempotent)."""
        records = created_records(notification)
        results: list[dict[str, Any]] = []
        failed: list[tuple[int, Exception]] = []
        for i, record in enumerate(records):
            try:
                if not isinstance(record, dict):
                    raise MalformedEvent(f"record {i} is {type(record).__name__}, not an object")
                results.append(self.process(refs.ref(record, refs.NOTIFICATION), context))
            except Exception as exc:  # raised after the rest, below (logged once, by the caller)
                failed.append((i, exc))
        if not failed:
            return results
        first = failed[0][1]
        if len(records) == 1:
            raise first  # nothing else was to be tried: the error as it is
        which = ", ".join(f"{i} ({type(exc).__name__})" for i, exc in failed[:20])
        message = (
            f"{len(failed)} of {len(records)} objects failed (records {which}); the others "
            f"were classified. First: {type(first).__name__}: {first}"
        )[:2000]
        if all(isinstance(exc, MalformedEvent) for _, exc in failed):
            raise MalformedEvent(message) from first  # a retry cannot mend them: poison
        raise ObjectsFailed(message) from first

    def handle_s3(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"results": self.process_records(event, context)}

    def handle_eventbridge(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"results": [self.process(refs.ref(event, refs.EVENTBRIDGE), context)]}

    def handle_sns(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        """S3 notifications fanned out through SNS (S3 -> SNS -> Lambda)."""
        results = []
        for i, record in enumerate(event["Records"]):
            sns = record.get("Sns") if isinstance(record, dict) else None
            what = f"SNS record {i}"
            if not isinstance(sns, dict):
                raise MalformedEvent(f"{what} has no 'Sns' object")
            body = s3_notification(_json_object(sns.get("Message"), f"{what}: Message"), what)
            if body is not None:
                results += self.process_records(body, context)
        return {"results": results}

    def handle_sqs(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        """S3 notifications delivered through SQS (directly, or S3 -> SNS -> SQS), with partial
        batch failure reporting."""
        failures = []
        for message in event["Records"]:
            message_id = message.get("messageId")
            what = f"SQS message {message_id}"
            try:
                body = s3_notification(unwrap(_json_object(message.get("body"), what), what), what)
                if body is not None:
                    self.process_records(body, context)
            except MalformedEvent as exc:
                # A poison message: never deleted silently. Reported as failed, it returns to
                # the queue until the redrive policy moves it to the dead-letter queue.
                logger.error("poison message: %s", exc, extra={"message_id": message_id})
                failures.append({"itemIdentifier": message_id})
            except Exception:  # reported per message so SQS retries only the failed ones
                logger.exception("message failed", extra={"message_id": message_id})
                failures.append({"itemIdentifier": message_id})
        return {"batchItemFailures": failures}

"""Which adapter an event belongs to, decided from its shape alone: the one place that knows which
event kinds exist and which role serves them."""

from __future__ import annotations

from collections.abc import Mapping

from handler.errors import UnsupportedEvent

HTTP, S3, SQS, SNS, EVENTBRIDGE, WARMUP, DISTRIBUTED = (
    "http",
    "s3",
    "sqs",
    "sns",
    "eventbridge",
    "warmup",
    "distributed",
)
# The kinds the batch role serves; HTTP is the API role's, WARMUP every role's.
BATCH_KINDS = (S3, SQS, SNS, EVENTBRIDGE, DISTRIBUTED)


def kind_of(event: object) -> str:
    if not isinstance(event, Mapping):
        raise UnsupportedEvent(
            f"unsupported event: a {type(event).__name__}, expected a JSON object"
        )
    if event.get("warmup") is True or event.get("source") == "serverless-plugin-warmup":
        return WARMUP
    if "distributed" in event:  # a step of the state machine for big objects
        return DISTRIBUTED
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        # SNS spells it EventSource.
        source = records[0].get("eventSource") or records[0].get("EventSource")
        if source == "aws:s3":
            return S3
        if source == "aws:sqs":
            return SQS
        if source == "aws:sns":
            return SNS
        raise UnsupportedEvent(f"unsupported event: Records from {source!r}")
    if event.get("source") == "aws.s3":
        if event.get("detail-type") == "Object Created":
            return EVENTBRIDGE
        raise UnsupportedEvent(
            f"unsupported event: EventBridge {event.get('detail-type')!r} from aws.s3"
        )
    context = event.get("requestContext")
    if isinstance(context, Mapping) and (
        "httpMethod" in event or "http" in context or "elb" in context
    ):
        return HTTP
    keys = ", ".join(sorted(map(str, event))[:10]) or "none"
    raise UnsupportedEvent(
        f"unsupported event with keys [{keys}]: expected an API Gateway, ALB or Function URL "
        'request, an S3 notification (direct, SQS, SNS or EventBridge) or {"warmup": true}'
    )

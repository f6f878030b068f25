"""Which S3 object an event names: the one parser of S3 notification records and EventBridge
"Object Created" events (direct, or inside SQS bodies and SNS messages once unwrapped).

The two shapes spell the same facts differently, and the difference matters:

| | S3 notification record | EventBridge event |
|---|---|---|
| where | `s3.bucket.name`, `s3.object` | `detail.bucket.name`, `detail.object` |
| key | form-encoded (a space arrives as `+`) | as it is (`c++ notes.txt` stays so) |
| eTag, version | `eTag`, `versionId` | `etag`, `version-id` |

Light on purpose (no AWS, no model): the batch adapter and the local tools both import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from handler.errors import MalformedEvent


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None  # bytes, when known (the pinned object's Content-Length)
    # Orders the events of one key (S3 documents it for exactly this): see `later`.
    sequencer: str | None = None
    # How the uploader asked long texts to be read (object metadata `long-text`), once read.
    long_text: str | None = None


def later(a: str | None, b: str | None) -> bool:
    """True when sequencer `a` is known to come after `b`: hexadecimal strings of one key's
    events, compared as S3 documents after right-padding the shorter with zeros
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
    Unknown (None, or not hexadecimal) orders nothing."""
    if not a or not b or not all(c in "0123456789abcdefABCDEF" for c in a + b):
        return False
    width = max(len(a), len(b))
    return a.upper().ljust(width, "0") > b.upper().ljust(width, "0")


@dataclass(frozen=True)
class Shape:
    """How one kind of event spells an object reference."""

    container: str
    etag: str
    version: str
    decode_key: Callable[[str], str]


NOTIFICATION = Shape(container="s3", etag="eTag", version="versionId", decode_key=unquote_plus)
EVENTBRIDGE = Shape(container="detail", etag="etag", version="version-id", decode_key=str)


def ref(node: Mapping[str, Any], shape: Shape) -> ObjectRef:
    """The object `node` (a notification record, or an EventBridge event) names. A node without
    the shape's fields (bucket name and object key, both strings) is a MalformedEvent."""
    try:
        inner = node[shape.container]
        obj = inner["object"]
        bucket, key = inner["bucket"]["name"], obj["key"]
        version, etag = obj.get(shape.version), obj.get(shape.etag)
        sequencer = obj.get("sequencer")
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedEvent(
            f"S3 event record without its {shape.container}.bucket.name / "
            f"{shape.container}.object.key ({type(exc).__name__}: {exc})"[:300]
        ) from None
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise MalformedEvent("S3 event record whose bucket name or object key is not a string")
    return ObjectRef(
        bucket=bucket,
        key=shape.decode_key(key),
        version_id=version if isinstance(version, str) and version else None,
        etag=etag if isinstance(etag, str) and etag else None,
        sequencer=sequencer if isinstance(sequencer, str) and sequencer else None,
    )


def shape_of(node: Mapping[str, Any]) -> Shape | None:
    """NOTIFICATION for an S3 notification record, EVENTBRIDGE for an S3 event from EventBridge,
    None for anything else (an envelope, a list, another service's event)."""
    s3 = node.get("s3")
    if isinstance(s3, Mapping) and isinstance(s3.get("object"), Mapping):
        return NOTIFICATION
    detail = node.get("detail")
    if (
        node.get("source") == "aws.s3"
        and isinstance(detail, Mapping)
        and isinstance(detail.get("object"), Mapping)
    ):
        return EVENTBRIDGE
    return None


def with_object(node: dict[str, Any], shape: Shape, etag: str, size: int) -> dict[str, Any]:
    """A copy of `node` whose object reference carries this eTag and size and no version: what a
    fresh upload's event would say."""
    inner = node[shape.container]
    obj = {**inner["object"], shape.etag: etag, "size": size}
    obj.pop(shape.version, None)
    return {**node, shape.container: {**inner, "object": obj}}

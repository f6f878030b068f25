"""What the summary already published for an object's key says (it is read once per event):
this very object was classified with this model (a repeated event has nothing to do), or a later
version of the key was (an older version's late or retried event must never replace it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from handler.batch.refs import ObjectRef, later
from handler.observability import logger


def already_done(
    done: dict[str, Any] | None, ref: ObjectRef, model_digest: str | None
) -> dict[str, Any] | None:
    """The published summary, if it is complete and of this very object (ETag) and model."""
    if not ref.etag:
        return None
    # A new model must reclassify: the summary records the digest it was made with.
    if (
        done is not None
        and done.get("complete")
        and done.get("source", {}).get("etag") == ref.etag
        and done.get("model_sha256") == model_digest
    ):
        return done
    return None


def newer_output(done: dict[str, Any] | None, ref: ObjectRef) -> dict[str, Any] | None:
    """The source of a published output made from a later event of this key than `ref`'s (a
    newer version), if there is one: an older version's late or retried event must never
    replace it."""
    source = done.get("source") if done is not None else None
    if isinstance(source, dict) and later(source.get("sequencer"), ref.sequencer):
        return source
    return None


def stale(ref: ObjectRef, newer: dict[str, Any]) -> dict[str, Any]:
    """Acknowledged, not retried: the newer version's output stays."""
    logger.warning(
        "stale event: the output was made from a later version of this key; left as it is",
        extra={"key": ref.key, "version": ref.version_id, "newer_version": newer.get("version_id")},
    )
    return {
        "status": "stale",
        "source": asdict(ref),
        "reason": f"the output was made from a later event of this key (version "
        f"{newer.get('version_id')}, sequencer {newer.get('sequencer')})",
    }

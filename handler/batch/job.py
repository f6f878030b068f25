"""One object of texts -> one JSON Lines object of predictions and a summary, resumable.

Storage is a Protocol (the S3 adapter implements it), so this module knows no AWS. Output is
staged in a local temporary file and published with a single PUT, which S3 makes atomic: a
reader sees the previous output or the complete new one, never a half-written object.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Protocol

from handler import strict_json
from handler.batch.formats import Record, detect, records
from handler.inference import LEGACY, Classifier
from handler.inference.classifier import NO_TOKENS
from handler.observability import logger, record_prediction

PREDICTIONS = ".predictions.jsonl"
SUMMARY = ".summary.json"
PARTIAL = ".partial.jsonl"
LOW_CONFIDENCE = 0.7


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str

    def key(self, source_key: str, suffix: str) -> str:
        # Deterministic: the same input key always maps to the same output key.
        return f"{self.prefix}{source_key}{suffix}"


class Store(Protocol):
    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]: ...
    def upload_file(self, bucket: str, key: str, path: str, content_type: str) -> None: ...
    def put_json(self, bucket: str, key: str, data: dict[str, Any]) -> None: ...
    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None: ...
    def download_file(self, bucket: str, key: str, path: str) -> bool: ...
    def delete(self, bucket: str, key: str) -> None: ...


Continue = Callable[[dict[str, Any]], None]


def _line(record: Record, prediction: dict[str, Any] | None, truncated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"record": record.number}
    if record.id is not None:
        out["id"] = record.id
    if prediction is None:
        out["error"] = record.error
    else:
        out.update(label=prediction["label"], score=prediction["score"], truncated=truncated)
    return out


def _record(lines: list[dict[str, Any]], tokens: int, started: float) -> None:
    ok = [ln for ln in lines if "error" not in ln]
    record_prediction(
        source="s3",
        texts=len(ok),
        tokens=tokens,
        truncated=sum(ln["truncated"] for ln in ok),
        low_confidence=sum(ln["score"] < LOW_CONFIDENCE for ln in ok),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def classify_chunk(classifier: Classifier, chunk: list[Record]) -> tuple[list[dict[str, Any]], int]:
    """Lines for a chunk of records, in order, and the tokens fed; valid texts go through the
    classifier together (micro-batched, batch-invariant)."""
    texts = [(r, r.text) for r in chunk if r.text is not None]
    encoded = classifier.tokenizer.encode([t for _, t in texts]) if texts else []
    good = [(r, e) for (r, _), e in zip(texts, encoded, strict=True) if e.content_tokens]
    empty = {r.number for (r, _), e in zip(texts, encoded, strict=True) if not e.content_tokens}
    results = classifier.run_all([e for _, e in good])
    scores = classifier.scores(results, None)
    answers = classifier.format(scores, single=False, top_k=LEGACY)
    by_number = {
        r.number: (a, res.truncated) for (r, _), a, res in zip(good, answers, results, strict=True)
    }
    lines = []
    for r in chunk:
        if r.number in empty:
            r = replace(r, error=f"'text' {NO_TOKENS}")
        answer, truncated = by_number.get(r.number, (None, False))
        lines.append(_line(r, answer, truncated))
    return lines, sum(res.num_tokens for res in results)


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass
class Progress:
    records: int = 0
    errors: int = 0
    truncated: int = 0
    low_confidence: int = 0
    invocations: int = 1

    def add(self, lines: list[dict[str, Any]], kinds: Counter[str]) -> None:
        for line in lines:
            self.records += 1
            if "error" in line:
                self.errors += 1
                kinds[line["error"].split(":")[0]] += 1
            else:
                self.truncated += bool(line["truncated"])
                self.low_confidence += line["score"] < LOW_CONFIDENCE


def run(
    ref: ObjectRef,
    classifier: Classifier,
    store: Store,
    dest: Destination,
    model_digest: str | None,
    *,
    chunk_size: int = 64,
    time_left_ms: Callable[[], int] | None = None,
    margin_ms: int = 30_000,
    resume: dict[str, Any] | None = None,
    continue_with: Continue | None = None,
) -> dict[str, Any]:
    """Classify every record of `ref`. Returns the summary (or a 'continued' status when the
    time budget ran out and a follow-up invocation was asked to resume from a checkpoint)."""
    started = time.perf_counter()
    fmt, gz = detect(ref.key)
    out_key = dest.key(ref.key, PREDICTIONS)
    summary_key = dest.key(ref.key, SUMMARY)
    partial_key = dest.key(ref.key, PARTIAL)

    if resume is None and ref.etag:
        done = store.get_json(dest.bucket, summary_key)
        # A new model must reclassify: the summary records the digest it was made with.
        if (
            done is not None
            and done.get("complete")
            and done.get("source", {}).get("etag") == ref.etag
            and done.get("model_sha256") == model_digest
        ):
            logger.info("already classified: repeated event", extra={"key": out_key})
            return {**done, "status": "already_done"}

    stream, pinned = store.open(ref)  # pinned: the exact version/etag being read
    progress = Progress(**resume["progress"]) if resume else Progress()
    if resume:
        progress.invocations += 1
    kinds: Counter[str] = Counter(resume.get("error_kinds", {}) if resume else {})
    skip = progress.records
    fd, path = tempfile.mkstemp(prefix="predictions-", suffix=".jsonl")
    os.close(fd)
    try:
        # The lines already written by earlier invocations come first (download replaces the file).
        if resume and skip and not store.download_file(dest.bucket, partial_key, path):
            raise RuntimeError(f"checkpoint {partial_key} is missing: cannot resume")
        with open(path, "ab") as out:
            reader = records(stream, fmt, gz)
            items = itertools.islice(iter(reader), skip, None)
            chunks = _chunks(items, chunk_size)
            chunk = next(chunks, None)
            while chunk is not None:
                t0 = time.perf_counter()
                lines, tokens = classify_chunk(classifier, chunk)
                _write(out, lines)
                progress.add(lines, kinds)
                _record(lines, tokens, t0)
                chunk = next(chunks, None)  # look ahead: never hand over an empty remainder
                if (
                    chunk is not None
                    and time_left_ms is not None
                    and continue_with is not None
                    and time_left_ms() < margin_ms
                ):
                    out.flush()
                    store.upload_file(dest.bucket, partial_key, path, "application/x-ndjson")
                    state = {"progress": asdict(progress), "error_kinds": dict(kinds)}
                    continue_with({"continuation": {"source": asdict(pinned), **state}})
                    logger.info(
                        "time budget spent: continuing in a new invocation",
                        extra={"records_done": progress.records},
                    )
                    return {"status": "continued", "records_done": progress.records}
        store.upload_file(dest.bucket, out_key, path, "application/x-ndjson")
    finally:
        os.unlink(path)
    summary = {
        "complete": True,
        "source": asdict(pinned),
        "format": fmt + (".gz" if gz else ""),
        "output": {"bucket": dest.bucket, "key": out_key},
        "records": progress.records,
        "classified": progress.records - progress.errors,
        "errors": progress.errors,
        "error_kinds": dict(kinds),
        "truncated": progress.truncated,
        "low_confidence": progress.low_confidence,
        "invocations": progress.invocations,
        "duration_s": round(time.perf_counter() - started, 3),
        "model_sha256": model_digest,
        # A data fault ended reading: every record before it is in the output; not retried.
        "object_incomplete": reader.fault is not None,
    }
    if reader.fault is not None:
        fault = {"error": reader.fault, "record": progress.records + 1}
        summary["data_fault"] = fault
        logger.warning("object ended by a data fault", extra=fault)
    store.put_json(dest.bucket, summary_key, summary)
    if resume:
        store.delete(dest.bucket, partial_key)
    return {**summary, "status": "done"}


def _write(out: IO[bytes], lines: list[dict[str, Any]]) -> None:
    out.write(b"".join(strict_json.dumps(ln).encode() + b"\n" for ln in lines))

"""One object of texts -> one JSON Lines object of predictions and a summary.

Storage is a Protocol (the S3 adapter implements it), so this module knows no AWS. Output is
staged in a local temporary file and published with a single PUT, which S3 makes atomic: a
reader sees the previous output or the complete new one, never a half-written object.

An object too big for one invocation (at least the hand-off size, or found too slow when the
time budget runs low) is handed to the distributed path (handler/batch/shards.py, run by a Step
Functions Distributed Map), which writes the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Protocol

from handler import strict_json
from handler.batch.formats import Inflation, Record, detect, records
from handler.batch.published import already_done, newer_output, stale
from handler.batch.refs import ObjectRef
from handler.errors import OutOfTime
from handler.inference import Classifier
from handler.inference.long_text import LONG_TEXT_MODES, TRUNCATE
from handler.observability import LOW_CONFIDENCE, logger, record_prediction

PREDICTIONS = ".predictions.jsonl"
SUMMARY = ".summary.json"
NDJSON = "application/x-ndjson"
_LINE_NO = re.compile(r" \(line \d+\)$")


MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length
KEY_DIGEST_CHARS = 32


@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str

    def key(self, source_key: str, suffix: str) -> str:
        """`prefix + source_key + suffix`. Deterministic: the same input key always maps to the
        same output key. One that would pass S3's 1,024-byte limit (an input key of ~990 bytes
        or more) keeps the start of the source key that fits, then `~` and a hash of the whole
        key: still unique, still deterministic, and a PUT that S3 accepts (an over-long key
        would fail the same way on every retry)."""
        full = f"{self.prefix}{source_key}{suffix}"
        if len(full.encode()) <= MAX_KEY_BYTES:
            return full
        digest = hashlib.sha256(source_key.encode()).hexdigest()[:KEY_DIGEST_CHARS]
        room = MAX_KEY_BYTES - len(f"{self.prefix}~{digest}{suffix}".encode())
        head = source_key.encode()[: max(0, room)].decode("utf-8", errors="ignore")
        return f"{self.prefix}{head}~{digest}{suffix}"

    def shortened(self, source_key: str, suffix: str) -> bool:
        return self.key(source_key, suffix) != f"{self.prefix}{source_key}{suffix}"


class Store(Protocol):
    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]: ...
    def upload_file(self, bucket: str, key: str, path: str, content_type: str) -> None: ...
    def put_json(self, bucket: str, key: str, data: Any) -> None: ...
    def get_json(self, bucket: str, key: str) -> Any: ...


@dataclass(frozen=True)
class LongTexts:
    """How the texts of an object are read: `long_text` and the window cap per text."""

    long_text: str = TRUNCATE
    max_windows: int | None = None


TRUNCATING = LongTexts()  # the pipeline's way: the default everywhere


@dataclass(frozen=True)
class Done:
    """What an invocation out of time had written when it handed its object over: the first
    `records` records' lines (the staged file at `path`, `size` bytes) and their counts. The
    distributed path continues after them and publishes them first, as they are."""

    path: str
    records: int
    size: int
    stats: dict[str, Any]  # Progress's fields and "error_kinds", as a shard's stats


# (the pinned object, why: "size" or "time", the records done, how texts are read) -> what
# the hand-off started
HandOff = Callable[[ObjectRef, str, Done | None, LongTexts], dict[str, Any]]


def for_object(pinned: ObjectRef, how: LongTexts) -> tuple[LongTexts, str | None]:
    """How this object's texts are read: the uploader's `long-text` metadata, else the
    function's setting; (the function's, a data fault naming the value) when the metadata is
    not one of the modes: no record is classified against the uploader's stated wish."""
    if pinned.long_text is None:
        return how, None
    asked = pinned.long_text.strip().lower()
    if asked not in LONG_TEXT_MODES:
        return how, (
            f"object metadata long-text={pinned.long_text!r} is not one of "
            f"{', '.join(LONG_TEXT_MODES)}: upload it again with a valid value or none"
        )
    return replace(how, long_text=asked), None


def _line(
    record: Record, prediction: dict[str, Any] | None, truncated: bool, windows: int = 1
) -> dict[str, Any]:
    out: dict[str, Any] = {"record": record.number}
    if record.id is not None:
        out["id"] = record.id
    if prediction is None:
        out["error"] = record.error
    else:
        out.update(label=prediction["label"], score=prediction["score"], truncated=truncated)
        if windows > 1:  # read whole in this many windows (long_text: windows)
            out["windows"] = windows
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
        rows=sum(ln.get("windows", 1) for ln in ok),
    )


def classify_chunk(
    classifier: Classifier,
    chunk: list[Record],
    stop: Callable[[], bool] | None = None,
    how: LongTexts = TRUNCATING,
) -> tuple[list[dict[str, Any]], int]:
    """Lines for a chunk of records, in order, and the tokens fed; valid texts go through the
    classifier together (length-sorted micro-batches, batch-invariant; a long text's windows
    too). `stop` is asked between micro-batches (OutOfTime when it says so)."""
    texts = [(r, r.item) for r in chunk if r.item is not None]
    with classifier.trace("tokenise"):  # per line: an unreadable one is that line's error
        encoded = classifier.tokenizer.encode([t for _, t in texts]) if texts else []
    good = [(r, t, e) for (r, t), e in zip(texts, encoded, strict=True) if e.problem is None]
    unreadable = {
        r.number: e.problem for (r, _), e in zip(texts, encoded, strict=True) if e.problem
    }
    said = classifier.answer(
        [t for _, t, _ in good],
        [e for _, _, e in good],
        long_text=how.long_text,
        max_windows=how.max_windows,
        stop=stop,
    )
    results, answers = said.results, said.labelled()
    by_number = {
        r.number: (a, res) for (r, _, _), a, res in zip(good, answers, results, strict=True)
    }
    lines = []
    for r in chunk:
        if r.number in unreadable:
            r = replace(r, error=f"'text' {unreadable[r.number]}")
        answer, res = by_number.get(r.number, (None, None))
        if res is None:
            lines.append(_line(r, None, False))
        else:
            lines.append(_line(r, answer, res.truncated, res.windows))
    return lines, sum(res.num_tokens for res in results)


# A chunk also ends at this many characters of text, so that a chunk of very long records
# (up to MAX_RECORD_CHARS each) stays small in memory; typical records never reach it.
CHUNK_CHARS = 4_000_000


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """Records in chunks of `size` (or fewer, at CHUNK_CHARS). A chunk is length-sorted into
    micro-batches: the larger it is, the less padding (SST-2, 8 per micro-batch: padded tokens
    over real ones 1.104 in chunks of 64, 1.031 in 256, 1.017 in 512, 1.008 in all 872)."""
    chunk: list[Record] = []
    chars = 0
    for record in items:
        chunk.append(record)
        chars += len(record.text) if record.text is not None else 0
        if len(chunk) >= size or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


@dataclass
class Progress:
    records: int = 0
    errors: int = 0
    truncated: int = 0
    low_confidence: int = 0
    windowed: int = 0  # texts read in more than one window

    def add(self, lines: list[dict[str, Any]], kinds: Counter[str]) -> None:
        for line in lines:
            self.records += 1
            if "error" in line:
                self.errors += 1
                # A kind, not an instance: "malformed CSV row (line 7)" counts as its kind.
                kinds[_LINE_NO.sub("", line["error"].split(":")[0])] += 1
            else:
                self.truncated += bool(line["truncated"])
                self.low_confidence += line["score"] < LOW_CONFIDENCE
                self.windowed += "windows" in line


def published(store: Store, dest: Destination, ref: ObjectRef) -> dict[str, Any] | None:
    """The summary published for `ref`'s key, if any (one GET, read by both checks below)."""
    found: dict[str, Any] | None = store.get_json(dest.bucket, dest.key(ref.key, SUMMARY))
    return found if isinstance(found, dict) else None


def classify_into(
    out: IO[bytes],
    items: Iterator[Record],
    classifier: Classifier,
    progress: Progress,
    kinds: Counter[str],
    chunk_size: int,
    stop: Callable[[], bool] | None = None,
    how: LongTexts = TRUNCATING,
) -> bool:
    """Classify records into `out`, one line each, in order. False when `stop()` said so with
    records still to do (asked between micro-batches, so the overshoot is one model run at
    most); True when every record is written."""
    chunks = _chunks(items, chunk_size)
    chunk = next(chunks, None)
    while chunk is not None:
        t0 = time.perf_counter()
        try:
            lines, tokens = classify_chunk(classifier, chunk, stop, how)
        except OutOfTime:
            return False
        _write(out, lines)
        progress.add(lines, kinds)
        _record(lines, tokens, t0)
        chunk = next(chunks, None)  # look ahead: never stop with nothing left to do
        if chunk is not None and stop is not None and stop():
            return False
    return True


def summarize(
    pinned: ObjectRef,
    fmt: str,
    gz: bool,
    dest: Destination,
    progress: Progress,
    kinds: Counter[str] | dict[str, int],
    fault: str | None,
    model_digest: str | None,
    seconds: float,
    long_text: str = TRUNCATE,
    **extra: Any,
) -> dict[str, Any]:
    """The summary both paths publish for an object (the distributed one adds its shards)."""
    summary = {
        "complete": True,
        "source": asdict(pinned),
        "format": fmt + (".gz" if gz else ""),
        "output": {"bucket": dest.bucket, "key": dest.key(pinned.key, PREDICTIONS)},
        # True when the source key was too long to be repeated in the output key (see
        # Destination.key): the output key is then the start of it and a hash.
        "output_key_shortened": dest.shortened(pinned.key, PREDICTIONS),
        "records": progress.records,
        "classified": progress.records - progress.errors,
        "errors": progress.errors,
        "error_kinds": dict(kinds),
        "truncated": progress.truncated,
        "low_confidence": progress.low_confidence,
        "long_text": long_text,
        "windowed": progress.windowed,
        **extra,
        "duration_s": round(seconds, 3),
        "model_sha256": model_digest,
        # A data fault ended reading: every record before it is in the output; not retried.
        "object_incomplete": fault is not None,
    }
    if fault is not None:
        data_fault = {"error": fault, "record": progress.records + 1}
        summary["data_fault"] = data_fault
        logger.warning("object ended by a data fault", extra=data_fault)
    return summary


def run(
    ref: ObjectRef,
    classifier: Classifier,
    store: Store,
    dest: Destination,
    model_digest: str | None,
    *,
    chunk_size: int = 512,
    time_left_ms: Callable[[], int] | None = None,
    margin_ms: int = 30_000,
    hand_off: HandOff | None = None,
    hand_off_bytes: int | None = None,
    inflation: Inflation | None = None,
    how: LongTexts = TRUNCATING,
) -> dict[str, Any]:
    """Classify every record of `ref` in this invocation, or hand the object to the distributed
    path: at once when it has at least `hand_off_bytes`, or when less than `margin_ms` is left
    with records still to do (the lines written so far go with it: the shards continue after
    them, and the merge publishes them first)."""
    started = time.perf_counter()
    fmt, gz = detect(ref.key)
    out_key = dest.key(ref.key, PREDICTIONS)
    if dest.shortened(ref.key, PREDICTIONS):
        logger.warning(
            "source key too long to repeat in the output key: shortened with a hash",
            extra={"source_key_bytes": len(ref.key.encode()), "output_key": out_key},
        )

    summary = published(store, dest, ref)
    done = already_done(summary, ref, model_digest)
    if done is not None:
        logger.info("already classified: repeated event", extra={"key": out_key})
        return {**done, "status": "already_done"}
    newer = newer_output(summary, ref)
    if newer is not None:
        return stale(ref, newer)

    stream, pinned = store.open(ref)  # pinned: the exact version/etag being read
    how, refused = for_object(pinned, how)
    if (
        hand_off is not None
        and hand_off_bytes is not None
        and pinned.size is not None
        and pinned.size >= hand_off_bytes
    ):
        _close(stream)
        return hand_off(pinned, "size", None, how)

    def out_of_time() -> bool:
        return hand_off is not None and time_left_ms is not None and time_left_ms() < margin_ms

    progress, kinds = Progress(), Counter[str]()
    with staged_file("predictions-") as path:
        with open(path, "wb") as out:
            reader = records(stream, fmt, gz, inflation)
            items: Iterator[Record] = iter(()) if refused else iter(reader)
            finished = classify_into(
                out, items, classifier, progress, kinds, chunk_size, out_of_time, how
            )
        if not finished:
            assert hand_off is not None
            _close(stream)
            logger.warning(
                "time budget spent before the object was done: handing the rest to the "
                "distributed path (lower the hand-off size so objects like it go there at once)",
                extra={"records_done": progress.records, "bytes": pinned.size},
            )
            done_so_far = None
            if progress.records:
                stats = {**asdict(progress), "error_kinds": dict(kinds)}
                done_so_far = Done(path, progress.records, os.path.getsize(path), stats)
            return hand_off(pinned, "time", done_so_far, how)
        # A later version may have landed meanwhile.
        newer = newer_output(published(store, dest, ref), ref)
        if newer is not None:
            _close(stream)
            return stale(ref, newer)
        store.upload_file(dest.bucket, out_key, path, NDJSON)
    summary = summarize(
        pinned,
        fmt,
        gz,
        dest,
        progress,
        kinds,
        refused or reader.fault,
        model_digest,
        time.perf_counter() - started,
        how.long_text,
        mode="single",
    )
    store.put_json(dest.bucket, dest.key(ref.key, SUMMARY), summary)
    return {**summary, "status": "done"}


@contextmanager
def staged_file(prefix: str) -> Iterator[str]:
    """A file in the temporary directory (Lambda's /tmp) to stage one output in before its single
    PUT; removed on the way out, uploaded or not (a hand-off, an error)."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".jsonl")
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def _close(stream: Any) -> None:
    """Let go of an object body not read to its end (a hand-off): frees the connection."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _write(out: IO[bytes], lines: list[dict[str, Any]]) -> None:
    out.write(b"".join(strict_json.dumps(ln).encode() + b"\n" for ln in lines))

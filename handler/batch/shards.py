"""The distributed path for objects too big for one invocation: plan -> shards -> merge.

A Step Functions Distributed Map (infra/statemachine/shards.asl.json) runs these three steps in
the batch function; this module knows no AWS (the store is the S3 adapter, or a fake).

- plan: cuts the object into shards of `shard_records` records and writes the shard list as a
  JSON array (what the Map's ItemReader reads) and the plan (record count, data fault).
  * uncompressed .jsonl/.txt: byte ranges at newlines, found in one pass without parsing; every
    shard reads its range of the very version the event announced (a ranged GET).
  * .csv (records may span lines) and every .gz (a gzip stream cannot be entered midway): the
    plan reads the object once with the same reader as the single path and writes each shard's
    parsed records to a chunk object, so numbering, error texts (CSV line numbers) and the data
    fault are exactly the single path's.
- shard: classifies its records into a part object (the output lines, global record numbers)
  and a small stats object. Deterministic: a retried shard writes the same bytes.
- merge: sums the stats, publishes the parts as one object (multipart upload: UploadPartCopy
  for parts of 5 MiB or more, smaller neighbours joined), then the summary, then deletes the
  work files. The output is byte-identical to the single path's for the same object.

An object handed over by an invocation out of time carries what that invocation wrote (the
job's `resume`): its lines are the head part, the plan's shards start after its last record,
and the merge publishes the head first. Nothing classified is classified again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Protocol

from handler import strict_json
from handler.batch.formats import (
    SNIFF_BYTES,
    Inflation,
    Reader,
    Record,
    _Raw,
    container_fault,
    line_per_record,
    line_ranges,
    records,
    wide_encoding,
)
from handler.batch.job import (
    NDJSON,
    PREDICTIONS,
    SUMMARY,
    TRUNCATING,
    Destination,
    Done,
    LongTexts,
    Progress,
    Store,
    classify_into,
    published,
    staged_file,
    summarize,
)
from handler.batch.published import already_done, newer_output, stale
from handler.batch.refs import ObjectRef
from handler.errors import MalformedEvent, ModelChanged, ObjectChanged, ShardMismatch
from handler.inference import Classifier
from handler.inference.long_text import TRUNCATE
from handler.observability import logger


class ShardStore(Store, Protocol):
    def open_range(self, ref: ObjectRef, start: int, end: int) -> Any: ...
    def assemble(
        self, bucket: str, key: str, parts: list[tuple[str, str, int]], content_type: str
    ) -> dict[str, int]: ...
    def delete_prefix(self, bucket: str, prefix: str) -> int: ...


def job_id(
    source: ObjectRef, model_digest: str | None, shard_records: int, chunk: int, done: int = 0
) -> str:
    """The same object (version/ETag), model, shard and chunk size, and records done before the
    hand-off, always make the same job."""
    fields: list[Any] = [
        source.bucket,
        source.key,
        source.version_id,
        source.etag,
        model_digest,
        shard_records,
        chunk,
    ]
    if done:
        fields.append(done)
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


def execution_name(job: Job) -> str:
    """A Step Functions execution name (<= 80 of [A-Za-z0-9_-]) unique to the job, readable."""
    tail = re.sub(r"[^A-Za-z0-9_-]+", "-", job.source.key.rsplit("/", 1)[-1])[-40:]
    return f"{tail.strip('-') or 'object'}-{job.id}"


@dataclass(frozen=True)
class WorkArea:
    """Where a job keeps its chunks, parts and plan while it runs (swept by the merge)."""

    bucket: str
    prefix: str


@dataclass(frozen=True)
class Job:
    """One object's distributed run, as the state machine carries it from step to step (its
    JSON is `to_json()`; every step reads it back with `from_json`)."""

    id: str
    source: ObjectRef
    format: str
    gz: bool
    output: Destination
    work: WorkArea
    model_sha256: str | None
    shard_records: int
    chunk_size: int
    # Records an invocation out of time classified before handing over: {"records", "part" (their
    # lines, in the work area), "bytes", "stats"}; None when the object was handed over unread.
    resume: dict[str, Any] | None = None
    # How texts are read (the single path's LongTexts): every shard reads them alike.
    long_text: str = TRUNCATE
    max_windows: int | None = None

    @property
    def done_records(self) -> int:
        return int(self.resume["records"]) if self.resume else 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object, step: object) -> Job:
        """The job a step event carries; MalformedEvent naming what is missing or wrong."""
        if not isinstance(data, dict) or "work" not in data or "source" not in data:
            raise MalformedEvent(f"distributed {step!r} event without a job from the plan")
        names = [f.name for f in dataclass_fields(cls)]
        optional = {f.name for f in dataclass_fields(cls) if f.default is not MISSING}
        missing = [name for name in names if name not in data and name not in optional]
        if missing:
            raise MalformedEvent(f"distributed {step!r} job lacks {', '.join(missing)}")
        try:
            return cls(
                **{name: data[name] for name in names if name not in _NESTED and name in data},
                source=ObjectRef(**data["source"]),
                output=Destination(**data["output"]),
                work=WorkArea(**data["work"]),
            )
        except TypeError as exc:
            raise MalformedEvent(f"distributed {step!r} job is malformed: {exc}") from None


_NESTED = ("source", "output", "work")


def make_job(
    pinned: ObjectRef,
    fmt: str,
    gz: bool,
    dest: Destination,
    work_bucket: str,
    work_prefix: str,
    model_digest: str | None,
    shard_records: int,
    chunk_size: int,
    done: Done | None = None,
    how: LongTexts = TRUNCATING,
) -> Job:
    # Shards start at chunk boundaries: every record then meets the same batch-mates as in the
    # single path (the same padded shapes, so the same float sums to the last bit). Records done
    # before a hand-off end at a chunk boundary too: the single path writes whole chunks.
    shard_records = -(-shard_records // chunk_size) * chunk_size
    jid = job_id(pinned, model_digest, shard_records, chunk_size, done.records if done else 0)
    resume = None
    if done is not None:
        resume = {
            "records": done.records,
            "part": f"{work_prefix}{jid}/head.jsonl",
            "bytes": done.size,
            "stats": done.stats,
        }
    return Job(
        id=jid,
        source=pinned,
        format=fmt,
        gz=gz,
        output=dest,
        work=WorkArea(work_bucket, f"{work_prefix}{jid}/"),
        model_sha256=model_digest,
        shard_records=shard_records,
        chunk_size=chunk_size,
        resume=resume,
        long_text=how.long_text,
        max_windows=how.max_windows,
    )


def _work_key(job: Job, name: str) -> str:
    return f"{job.work.prefix}{name}"


def _part_key(job: Job, index: int, suffix: str) -> str:
    return _work_key(job, f"parts/{index:06d}{suffix}")


def _check_model(job: Job, model_digest: str | None) -> None:
    if job.model_sha256 != model_digest:
        raise ModelChanged(
            f"job {job.id} was planned for model {job.model_sha256} but this function "
            f"serves {model_digest}: its shards would mix two models' answers. Deploy one model, "
            "then re-run the object (upload it again, or start the state machine again)"
        )


def _record_line(record: Record) -> bytes:
    # ensure_ascii: a text that came from JSON may hold lone surrogates (\ud800), kept as escapes.
    fields = {k: v for k, v in asdict(record).items() if v is not None}
    return json.dumps(fields, ensure_ascii=True, allow_nan=False).encode() + b"\n"


def _chunk_records(stream: Any) -> Iterator[Record]:
    for line in io.BufferedReader(_Raw(stream), buffer_size=1 << 16):
        yield Record(**strict_json.loads(line.decode()))


class _Replay:
    """A stream whose first bytes were already read: they come first again."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head, self._rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(out) :]
            if n < 0:
                rest: bytes = self._rest.read()
                return out + rest
            return out
        data: bytes = self._rest.read(n)
        return data


def plan(
    job: Job, store: ShardStore, model_digest: str | None, inflation: Inflation | None = None
) -> dict[str, Any]:
    """Cut the object into shards; write the shard list (the Map's items) and the plan."""
    _check_model(job, model_digest)
    ref = job.source
    work_bucket, per = job.work.bucket, job.shard_records
    manifest = {"bucket": work_bucket, "key": _work_key(job, "shards.json")}
    try:
        stream, pinned = store.open(ref)
    except ObjectChanged as exc:
        # A newer object replaced it (unversioned bucket): that object's own event has it.
        logger.warning(str(exc))
        store.put_json(work_bucket, manifest["key"], [])
        return {"manifest": manifest, "shards": 0, "records": 0, "skipped": str(exc)}
    shards: list[dict[str, Any]] = []
    fault: str | None = None
    head = stream.read(SNIFF_BYTES)
    stream = _Replay(head, stream)
    # UTF-16/32 text cannot be cut at newline bytes, and an archive is no text: both are read
    # from the start by a Reader (which decodes the one and records the other as a data fault).
    cuttable = wide_encoding(head) is None and container_fault(head) is None
    skip = job.done_records  # classified before the hand-off: in no shard
    if line_per_record(job.format, job.gz) and cuttable:
        ranges, total = line_ranges(stream, per, skip=skip)
        for i, (first, count, start, end) in enumerate(ranges):
            shards.append(
                {"index": i, "first_record": first, "records": count, "range": [start, end]}
            )
    else:
        reader = records(stream, job.format, job.gz, inflation)
        total = 0
        batch: list[bytes] = []
        for record in reader:
            total += 1
            if total <= skip:  # read again (a stream cannot be entered midway), not classified
                continue
            batch.append(_record_line(record))
            if len(batch) == per:
                shards.append(_upload_chunk(job, store, batch, len(shards), total))
                batch = []
        if batch:
            shards.append(_upload_chunk(job, store, batch, len(shards), total))
        fault = reader.fault
    if total < skip:
        raise ShardMismatch(
            f"job {job.id}: the object has {total} records, but {skip} were classified before "
            "the hand-off: its bytes are not what was read"
        )
    store.put_json(work_bucket, manifest["key"], shards)
    store.put_json(
        work_bucket,
        _work_key(job, "plan.json"),
        {
            "source": asdict(pinned),
            "records": total,
            "resumed_after": skip,
            "shards": len(shards),
            "fault": fault,
            "planned_at": time.time(),
        },
    )
    logger.info("planned", extra={"job": job.id, "records": total, "shards": len(shards)})
    return {"manifest": manifest, "shards": len(shards), "records": total}


def _upload_chunk(
    job: Job, store: ShardStore, lines: list[bytes], index: int, total: int
) -> dict[str, Any]:
    """One shard's parsed records as a chunk object (staged in /tmp, as the output is)."""
    key = _work_key(job, f"chunks/{index:06d}.jsonl")
    with staged_file("chunk-") as path:
        with open(path, "wb") as out:
            out.writelines(lines)
        store.upload_file(job.work.bucket, key, path, NDJSON)
    return {
        "index": index,
        "first_record": total - len(lines) + 1,
        "records": len(lines),
        "chunk": key,
    }


def shard(
    job: Job,
    item: dict[str, Any],
    classifier: Classifier,
    store: ShardStore,
    model_digest: str | None,
) -> dict[str, Any]:
    """Classify one shard into its part object and stats; the same bytes on every retry."""
    _check_model(job, model_digest)
    started = time.perf_counter()
    index = item["index"]
    if "range" in item:
        start, end = item["range"]
        stream = store.open_range(job.source, start, end)
        # The same reader as the single path, numbering from the shard's first record; a BOM
        # is the object's, so only the shard at byte 0 drops one.
        reader = Reader(stream, job.format, False, item["first_record"], strip_bom=start == 0)
        items: Iterator[Record] = iter(reader)
    else:
        stream, _ = store.open(ObjectRef(job.work.bucket, item["chunk"]))
        items = _chunk_records(stream)
    progress, kinds = Progress(), Counter[str]()
    with staged_file("part-") as path:
        with open(path, "wb") as out:
            how = LongTexts(job.long_text, job.max_windows)
            classify_into(out, items, classifier, progress, kinds, job.chunk_size, None, how)
        if progress.records != item["records"]:
            raise ShardMismatch(
                f"shard {index} of job {job.id} read {progress.records} records, its plan "
                f"counted {item['records']}: the object's bytes are not what was planned"
            )
        size = os.path.getsize(path)
        store.upload_file(job.work.bucket, _part_key(job, index, ".jsonl"), path, NDJSON)
    stats = {**asdict(progress), "error_kinds": dict(kinds), "bytes": size}
    store.put_json(job.work.bucket, _part_key(job, index, ".json"), stats)
    seconds = time.perf_counter() - started
    logger.info(
        "shard done",
        extra={"job": job.id, "shard": index, "records": progress.records, "s": seconds},
    )
    return {"index": index, "records": progress.records, "bytes": size}


def merge(job: Job, store: ShardStore, model_digest: str | None) -> dict[str, Any]:
    """Publish the parts as the one output object, then the summary; clean the work files."""
    dest = job.output
    ref = job.source
    summary = published(store, dest, ref)
    done = already_done(summary, ref, job.model_sha256)
    if done is not None:  # a re-run after a complete merge: nothing to do, nothing to undo
        return {**done, "status": "already_done"}
    newer = newer_output(summary, ref)
    if newer is not None:  # a later version's output was published meanwhile: it stays
        return stale(ref, newer)
    _check_model(job, model_digest)
    work_bucket = job.work.bucket
    planned = store.get_json(work_bucket, _work_key(job, "plan.json"))
    if planned is None:
        skipped = f"no plan for job {job.id} (the object changed before it was planned)"
        return {"status": "skipped", "reason": skipped}
    progress, kinds = Progress(), Counter[str]()
    parts: list[tuple[str, str, int]] = []

    def add(stats: dict[str, Any], part: str) -> None:
        stats = dict(stats)
        kinds.update(stats.pop("error_kinds"))
        size = stats.pop("bytes", None)
        for name, value in stats.items():
            setattr(progress, name, getattr(progress, name) + value)
        parts.append((work_bucket, part, size))

    if job.resume is not None:  # the lines written before the hand-off come first
        add({**job.resume["stats"], "bytes": job.resume["bytes"]}, job.resume["part"])
    for index in range(planned["shards"]):
        stats = store.get_json(work_bucket, _part_key(job, index, ".json"))
        if stats is None:
            raise ShardMismatch(f"shard {index} of job {job.id} has no output: not merged")
        add(stats, _part_key(job, index, ".jsonl"))
    if progress.records != planned["records"]:
        raise ShardMismatch(
            f"job {job.id}: the shards hold {progress.records} records, the plan "
            f"{planned['records']}"
        )
    pinned = ObjectRef(**planned["source"])
    counts = store.assemble(dest.bucket, dest.key(ref.key, PREDICTIONS), parts, NDJSON)
    summary = summarize(
        pinned,
        job.format,
        job.gz,
        dest,
        progress,
        kinds,
        planned["fault"],
        model_digest,
        time.time() - planned["planned_at"],  # from the plan to the published output
        job.long_text,
        mode="distributed",
        shards=planned["shards"],
        resumed_after=job.done_records,
    )
    store.put_json(dest.bucket, dest.key(ref.key, SUMMARY), summary)
    removed = store.delete_prefix(work_bucket, job.work.prefix)
    logger.info("merged", extra={"job": job.id, **counts, "work_files_deleted": removed})
    return {**summary, "status": "done", "parts": counts}

"""The batch job without S3: streaming with bounded memory, records in = lines out."""

from __future__ import annotations

import gzip
import io
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from handler.batch.formats import detect, records
from handler.batch.job import Destination, run
from handler.batch.refs import ObjectRef
from handler.errors import InvalidInput
from handler.inference import Classifier


class GeneratedStream:
    """An object body made on the fly, never held in memory: n JSON lines of ~line_chars."""

    def __init__(self, n: int, line_chars: int) -> None:
        pad = "the plot " * (line_chars // 9)
        self._lines = (
            json.dumps({"id": i, "text": f"{pad} great {i}"}).encode() + b"\n" for i in range(n)
        )
        self._buffer = b""
        self.bytes_served = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            line = next(self._lines, None)
            if line is None:
                break
            self._buffer += line
        out, self._buffer = (
            (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        )
        self.bytes_served += len(out)
        return out


class MemoryStore:
    """Keeps only what the job writes; reading returns the given stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.files: dict[str, int] = {}
        self.lines = 0
        self.json: dict[str, dict[str, Any]] = {}

    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]:
        return self.stream, ref

    def upload_file(self, bucket: str, key: str, path: str, content_type: str) -> None:
        self.files[key] = os.path.getsize(path)
        with open(path, "rb") as fh:
            self.lines = sum(1 for _ in fh)

    def put_json(self, bucket: str, key: str, data: dict[str, Any]) -> None:
        self.json[key] = data

    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        return self.json.get(key)

    def download_file(self, bucket: str, key: str, path: str) -> bool:
        return False

    def delete(self, bucket: str, key: str) -> None:
        self.files.pop(key, None)


@pytest.mark.slow
def test_large_object_streams_with_bounded_memory(tiny_model: Path) -> None:
    clf = Classifier.from_dir(tiny_model)
    n = 12_000
    stream = GeneratedStream(n, line_chars=2_500)  # ~30 MB of input
    store = MemoryStore(stream)
    tracemalloc.start()
    summary = run(
        ObjectRef("in", "big.jsonl"), clf, store, Destination("out", "p/"), None, chunk_size=64
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stream.bytes_served > 30_000_000
    assert summary["records"] == n and summary["errors"] == 0 and store.lines == n
    assert peak < 8_000_000, f"peak Python allocations {peak} bytes for a 30 MB object"


def test_over_long_lines_are_reported_not_loaded() -> None:
    from handler.batch import formats

    big = b"x" * (formats.MAX_RECORD_CHARS + 10)
    out = list(records(io.BytesIO(b"good\n" + big + b"\nbad\n"), ".txt", False))
    assert [r.text or r.error for r in out] == [
        "good",
        f"line longer than {formats.MAX_RECORD_CHARS} characters",
        "bad",
    ]


def test_gzip_of_each_format_streams() -> None:
    data = gzip.compress(b'{"text": "a"}\n{"text": "b"}\n')
    assert [r.text for r in records(io.BytesIO(data), ".jsonl", True)] == ["a", "b"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a.jsonl", (".jsonl", False)), ("A.CSV.GZ", (".csv", True)), ("dir/x.txt", (".txt", False))],
)
def test_detect(key: str, expected: tuple[str, bool]) -> None:
    assert detect(key) == expected


@pytest.mark.parametrize("key", ["a.json", "b.parquet", "c.gz", "noext"])
def test_detect_refuses_unknown(key: str) -> None:
    with pytest.raises(InvalidInput, match="unsupported file type"):
        detect(key)


class BytesStore(MemoryStore):
    """Serves the same bytes at every open, as S3 does."""

    def __init__(self, data: bytes) -> None:
        super().__init__(None)
        self.data = data

    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]:
        return io.BytesIO(self.data), ref


def test_repeat_is_skipped_only_for_the_same_object_and_model(tiny_model: Path) -> None:
    clf = Classifier.from_dir(tiny_model)
    store = BytesStore(b"great\nawful\n")
    ref, dest = ObjectRef("in", "a.txt", etag="e1"), Destination("out", "p/")
    assert run(ref, clf, store, dest, "model-1")["status"] == "done"
    assert run(ref, clf, store, dest, "model-1")["status"] == "already_done"
    assert run(ref, clf, store, dest, "model-2")["status"] == "done"  # new model: reclassify
    assert run(ObjectRef("in", "a.txt", etag="e2"), clf, store, dest, "model-2")["status"] == "done"


class CountingStop:
    """A deadline that passes after `allowed` questions; counts the model runs made."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.allowed


def test_the_deadline_is_asked_between_micro_batches_of_a_chunk(tiny_model: Path) -> None:
    from collections import Counter

    from handler.batch.job import Progress, classify_into

    clf = Classifier.from_dir(tiny_model)
    assert clf._batch > 1  # padded micro-batches: one chunk holds many runs
    body = b"".join(b"great %d\n" % i for i in range(200))
    items = iter(records(io.BytesIO(body), ".txt", False))
    runs = 0
    real = clf.logits

    def counted(batch: Any) -> Any:
        nonlocal runs
        runs += 1
        return real(batch)

    clf.logits = counted  # type: ignore[method-assign]
    stop = CountingStop(allowed=2)
    out, progress = io.BytesIO(), Progress()
    finished = classify_into(out, items, clf, progress, Counter(), 256, stop)
    # One chunk of 200 records (25 micro-batches of 8): stopped after three runs, not 25.
    assert not finished and runs == 3 and stop.asked == 3
    assert out.getvalue() == b"" and progress.records == 0  # nothing half-written


def test_a_chunk_of_very_long_records_ends_at_the_character_budget() -> None:
    from handler.batch import job
    from handler.batch.formats import Record

    text = "x" * (job.CHUNK_CHARS // 3 + 1)
    items = [Record(i + 1, text=text) for i in range(7)] + [Record(8, error="bad")]
    sizes = [len(c) for c in job._chunks(iter(items), 256)]
    assert sizes == [3, 3, 2] and sum(sizes) == len(items)
    assert [len(c) for c in job._chunks(iter(items), 2)] == [2, 2, 2, 2]

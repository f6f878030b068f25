"""Property-based: any bytes, any JSON, through every record reader and the chunk classifier:
nothing escapes per-record handling, and records in = lines out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from handler.batch.formats import SUFFIXES, Reader, container_fault, detect, wide_encoding
from handler.batch.job import _write, classify_chunk
from handler.inference import Classifier

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text with every code point, lone surrogates included: json.dumps writes one as a "\udc80"
# escape, which parses back into a str no UTF-8 encoder takes.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["text", "id", "x"]) | st.text(max_size=4), children, max_size=3
        )
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def clf(tiny_model: Path) -> Classifier:
    return Classifier.from_dir(tiny_model)


def _physical_lines(data: bytes) -> int:
    """Lines as universal newlines end them: LF, CRLF, CR alone."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return len(lines) - (1 if lines[-1] == b"" else 0)


def _check(reader: Reader, clf: Classifier) -> list[Any]:
    records = list(reader)
    assert [r.number for r in records] == list(range(1, len(records) + 1))
    assert all((r.text is None) != (r.error is None) for r in records)
    lines, _ = classify_chunk(clf, records)
    assert [ln["record"] for ln in lines] == [r.number for r in records]
    assert all(("label" in ln) != ("error" in ln) for ln in lines)
    for ln in lines:
        json.loads(json.dumps(ln, allow_nan=False))  # strict JSON out
    out = io.BytesIO()
    _write(out, lines)  # the writer the job uses: one UTF-8 line per record, never a raise
    assert out.getvalue().count(b"\n") == len(records)
    return records


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_in_any_format(clf: Classifier, data: bytes, suffix: str) -> None:
    fmt, gz = detect("x" + suffix)
    reader = Reader(io.BytesIO(data), fmt, gz)
    records = _check(reader, clf)
    sniffed = container_fault(data[:512]) or wide_encoding(data)
    if not gz and fmt != ".csv" and not sniffed:  # UTF-8 text: one record per line
        assert reader.fault is None
        assert len(records) == _physical_lines(data)


@SETTINGS
@given(ids=st.lists(JSON, min_size=1, max_size=6))
def test_any_json_value_as_id_is_echoed_or_that_records_error(
    clf: Classifier, ids: list[Any]
) -> None:
    data = "\n".join(json.dumps({"id": i, "text": "great"}) for i in ids).encode()
    reader = Reader(io.BytesIO(data), ".jsonl", False)
    assert len(_check(reader, clf)) == len(ids)


def test_a_lone_surrogate_id_is_that_records_error_not_the_objects(clf: Classifier) -> None:
    data = b'{"id": "ok", "text": "great"}\n{"id": "\\udc80", "text": "great"}\n{"text": "fine"}\n'
    records = _check(Reader(io.BytesIO(data), ".jsonl", False), clf)
    assert [r.error for r in records][1] == "'id' is not valid Unicode (a lone surrogate escape)"
    assert records[0].id == "ok" and records[2].text == "fine"


@SETTINGS
@given(values=st.lists(JSON, max_size=8))
def test_any_json_lines(clf: Classifier, values: list[Any]) -> None:
    data = "\n".join(json.dumps(v) for v in values).encode()
    reader = Reader(io.BytesIO(data), ".jsonl", False)
    assert len(_check(reader, clf)) == len(values)
    assert reader.fault is None


LINE = st.one_of(
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
    JSON.map(lambda v: json.dumps({"text": v, "id": 1}).encode()),
    st.sampled_from([b"", b"\xef\xbb\xbf" + b'{"text": "bom"}', b"\r", b'{"text": "a"}\r']),
)


@SETTINGS
@given(
    lines=st.lists(LINE, max_size=30),
    final_newline=st.booleans(),
    per=st.integers(1, 8),
    block=st.integers(1, 64),
    skip=st.one_of(st.just(0), st.integers(0, 35)),
    fmt=st.sampled_from([".jsonl", ".txt"]),
)
def test_byte_ranges_at_newlines_read_as_the_whole_object(
    lines: list[bytes], final_newline: bool, per: int, block: int, skip: int, fmt: str
) -> None:
    """The distributed path's shards of a line-per-record object: each byte range, read with
    its first record number (and the BOM rule of the object's start), gives exactly the records
    the whole object gives there, with the same numbers: none lost, none doubled. After a time
    hand-off the ranges start after the `skip` records already written, and give the rest."""
    from handler.batch.formats import line_ranges

    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    # An archive or UTF-16/32 text is not cut into ranges: the plan reads it whole.
    assume(container_fault(data[:512]) is None and wide_encoding(data) is None)
    whole = list(Reader(io.BytesIO(data), fmt, False))
    skip = min(skip, len(whole))
    ranges, total = line_ranges(io.BytesIO(data), per, block=block, skip=skip)
    assert total == len(whole)
    assert all(count == per for _, count, _, _ in ranges[:-1])
    pieces = []
    for first, count, start, end in ranges:
        piece = list(Reader(io.BytesIO(data[start:end]), fmt, False, first, strip_bom=start == 0))
        assert len(piece) == count
        pieces += piece
    assert pieces == whole[skip:]
    assert [r[2] for r in ranges[1:]] == [r[3] for r in ranges[:-1]]  # contiguous, no gaps

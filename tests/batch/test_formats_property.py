"""Property-based: any bytes, any JSON, through every record reader and the chunk classifier:
nothing escapes per-record handling, and records in = lines out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.batch.formats import SUFFIXES, Reader, detect
from handler.batch.job import classify_chunk
from handler.inference import Classifier

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
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
    lines = data.split(b"\n")
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
    return records


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_in_any_format(clf: Classifier, data: bytes, suffix: str) -> None:
    fmt, gz = detect("x" + suffix)
    reader = Reader(io.BytesIO(data), fmt, gz)
    records = _check(reader, clf)
    if not gz and fmt != ".csv":
        assert reader.fault is None
        assert len(records) == _physical_lines(data)


@SETTINGS
@given(values=st.lists(JSON, max_size=8))
def test_any_json_lines(clf: Classifier, values: list[Any]) -> None:
    data = "\n".join(json.dumps(v) for v in values).encode()
    reader = Reader(io.BytesIO(data), ".jsonl", False)
    assert len(_check(reader, clf)) == len(values)
    assert reader.fault is None

"""formats: CSV as spreadsheets write it, and headers that cannot be mapped."""

from __future__ import annotations

import csv
import gzip
import io
from typing import Literal

import pytest

from handler.batch.formats import records

ROWS = [("r1", "a fine film"), ("r2", 'said "no", then left')]


def spreadsheet_csv(encoding: str, quoting: Literal[0, 1, 2, 3]) -> bytes:
    """What Excel's "CSV UTF-8" and pandas' to_csv(encoding="utf-8-sig", quoting=QUOTE_ALL)
    write: a byte-order mark, then every field quoted."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator="\r\n")
    writer.writerow(["id", "text"])
    writer.writerows(ROWS)
    return out.getvalue().encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
@pytest.mark.parametrize("quoting", [csv.QUOTE_ALL, csv.QUOTE_MINIMAL, csv.QUOTE_NONNUMERIC])
@pytest.mark.parametrize("gz", [False, True])
def test_a_bom_and_quoted_header_map_both_columns(
    encoding: str, quoting: Literal[0, 1, 2, 3], gz: bool
) -> None:
    data = spreadsheet_csv(encoding, quoting)
    reader = records(io.BytesIO(gzip.compress(data) if gz else data), ".csv", gz)
    out = list(reader)
    assert reader.fault is None
    assert [(r.id, r.text, r.error) for r in out] == [(i, t, None) for i, t in ROWS]


@pytest.mark.parametrize(
    "header",
    [b"id,body\n", b'"\xef\xbb\xbfid","review"\n', b"text,text\n", b"id,id,text\n"],
)
def test_a_header_that_cannot_be_mapped_is_a_fault_naming_its_columns(header: bytes) -> None:
    reader = records(io.BytesIO(header + b"1,good\n2,bad\n"), ".csv", False)
    assert list(reader) == []
    assert reader.fault is not None and reader.fault.startswith("CSV header has ")
    first = header.split(b",")[0].strip(b'"').decode("utf-8-sig").strip('"')
    assert repr(first)[1:-1] in reader.fault  # the columns it saw are named


def bomb(lines: int, width: int = 999) -> bytes:
    """Lines of one repeated letter, gzipped: ~1,000x smaller than what they inflate to."""
    return gzip.compress((b"x" * width + b"\n") * lines, compresslevel=9)


def test_a_gzip_bomb_is_a_data_fault_naming_the_ratio_within_megabytes() -> None:
    data = bomb(100_000)  # 100 MB inflated, ~210 KB compressed
    assert len(data) < 250_000
    reader = records(io.BytesIO(data), ".txt", True)
    got = sum(1 for _ in reader)
    assert reader.fault is not None and "MAX_COMPRESSION_RATIO" in reader.fault
    assert 0 < got < 20_000  # stopped within the first ~20 MB, not after 100 MB


def test_the_absolute_budget_holds_whatever_the_ratio() -> None:
    from handler.batch.formats import Inflation

    limit = Inflation(max_bytes=3 << 20, max_ratio=1e9)
    reader = records(io.BytesIO(bomb(10_000)), ".jsonl", True, limit)
    got = sum(1 for _ in reader)
    assert reader.fault is not None and "3 MB (MAX_DECOMPRESSED_MB)" in reader.fault
    assert got <= (3 << 20) // 1000 + 1  # no more than the budget holds


def test_ordinary_text_inflates_freely() -> None:
    lines = [f"review {i}: the acting was fine and the plot {i % 97} thin" for i in range(50_000)]
    data = gzip.compress("\n".join(lines).encode())
    reader = records(io.BytesIO(data), ".txt", True)
    assert [r.text for r in reader] == lines and reader.fault is None

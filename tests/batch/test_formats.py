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

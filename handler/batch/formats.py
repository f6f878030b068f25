"""A byte stream of texts (.jsonl, .csv, .txt, each optionally .gz) -> numbered records.

Streaming and bounded: memory does not grow with the object. Every input record yields exactly
one Record; a bad one carries an `error` instead of a text, so nothing is dropped. A fault in
the object's bytes that ends reading (a .gz that is not gzip, cut short or followed by other
bytes; a malformed CSV header) ends the records and is kept in `Reader.fault`: the records
before it are classified and the summary says where the object stopped. Retrying cannot fix
bytes, so a data fault never raises.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from handler import strict_json
from handler.errors import DataFault, InvalidInput
from handler.inference.inputs import text_problem

FORMATS = (".jsonl", ".csv", ".txt")
SUFFIXES = (*FORMATS, *(f + ".gz" for f in FORMATS))
MAX_RECORD_CHARS = 1_000_000
_READ = 1 << 16


@dataclass(frozen=True)
class Record:
    number: int  # 1-based position among the object's records
    id: Any = None
    text: str | None = None
    error: str | None = None
    # The pipeline's text pair (`text_pair` beside `text`: NLI, paraphrase, query and passage).
    text_pair: str | None = None

    @property
    def item(self) -> str | tuple[str, str] | None:
        """What the classifier reads: the text, or the text and its pair."""
        if self.text is None or self.text_pair is None:
            return self.text
        return (self.text, self.text_pair)


SNIFF_BYTES = 512  # bytes read ahead at an object's start: byte-order marks, archive signatures
# Byte-order marks of encodings a Reader decodes instead of UTF-8 (UTF-32 LE before UTF-16 LE:
# its mark begins with UTF-16 LE's).
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def wide_encoding(head: bytes) -> str | None:
    """'utf-16' or 'utf-32' when `head` starts with that encoding's byte-order mark."""
    return next((name for bom, name in WIDE_BOMS if head.startswith(bom)), None)


def container_fault(head: bytes) -> str | None:
    """A data fault when the (decompressed) bytes are an archive, not a text file: their
    headers would otherwise be read as records."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "the object is a tar archive, not a text file: upload the files in it one by one"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "the object is a zip archive, not a text file: upload the files in it one by one"
    if head.startswith(b"\x1f\x8b"):
        return "the object is gzip inside gzip (or gzip without a .gz name): compress it once"
    return None


def detect(key: str) -> tuple[str, bool]:
    """(format, gzipped) from the key's extension, case-insensitively."""
    lower = key.lower()
    gz = lower.endswith(".gz")
    base = lower[:-3] if gz else lower
    for fmt in FORMATS:
        if base.endswith(fmt):
            return fmt, gz
    raise InvalidInput(f"unsupported file type for {key!r}: expected one of {', '.join(SUFFIXES)}")


def _check_text(value: Any) -> tuple[str | None, str | None]:
    problem = text_problem(value)
    return (None, f"'text' {problem}") if problem else (value, None)


def _check_pair(value: Any) -> tuple[str | None, str | None]:
    """A record's `text_pair`: absent (or null) for a single text, else a text like `text`."""
    if value is None:
        return None, None
    problem = text_problem(value)
    return (None, f"'text_pair' {problem}") if problem else (value, None)


def _valid_utf8(line: str) -> bool:
    # Undecodable bytes were kept as lone surrogates (errors="surrogateescape").
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lines(text: IO[str], strip_bom: bool = True) -> Iterator[tuple[str | None, str | None]]:
    """(line, None) or (None, error) per physical line; an over-long line is skipped in chunks.
    A byte-order mark is dropped from the object's first line only (`strip_bom` is False for a
    shard that starts inside the object)."""
    first = strip_bom
    while True:
        line = text.readline(MAX_RECORD_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_RECORD_CHARS and not line.endswith("\n"):
            while line and not line.endswith("\n"):
                line = text.readline(_READ)
            yield None, f"line longer than {MAX_RECORD_CHARS} characters"
            first = False
            continue
        line = line.rstrip("\r\n")
        if first:
            line = line.removeprefix("\ufeff")
            first = False
        if not _valid_utf8(line):
            yield None, "not valid UTF-8"
        else:
            yield line, None


def _jsonl(text: IO[str], start: int = 1, strip_bom: bool = True) -> Iterator[Record]:
    for n, (line, error) in enumerate(_lines(text, strip_bom), start=start):
        if line is None:
            yield Record(n, error=error)
            continue
        if not line.strip():
            yield Record(n, error="empty line")
            continue
        try:
            # Ids too large for a double (1e400) are kept as their literal: see docs/batch.md.
            obj = strict_json.loads(line, overflow_as_literal=True)
        except strict_json.JSONProblem as exc:
            yield Record(n, error=f"invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield Record(n, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        rid = obj.get("id")
        if not _writable(rid):
            # Echoed into the output line, it would fail there and sink the whole object.
            yield Record(n, error="'id' is not valid Unicode (a lone surrogate escape)")
            continue
        if "text" not in obj:
            yield Record(n, id=rid, error="missing 'text'")
            continue
        value, error = _check_text(obj["text"])
        pair, pair_error = _check_pair(obj.get("text_pair"))
        if error is None and pair_error is not None:
            value, error = None, pair_error
        yield Record(n, id=rid, text=value, error=error, text_pair=pair if value else None)


def _writable(value: Any) -> bool:
    """Whether `value` (a parsed JSON id) can be written back as UTF-8 JSON: a "\udc80" escape
    parses into a lone surrogate, which no UTF-8 encoder takes."""
    if value is None or isinstance(value, bool | int | float):
        return True
    try:
        strict_json.dumps(value).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def _txt(text: IO[str], start: int = 1, strip_bom: bool = True) -> Iterator[Record]:
    for n, (line, error) in enumerate(_lines(text, strip_bom), start=start):
        if line is None:
            yield Record(n, error=error)
        elif not line.strip():
            yield Record(n, error="empty line")
        else:
            yield Record(n, text=line)


def _csv(text: IO[str], start: int = 1, strip_bom: bool = True) -> Iterator[Record]:
    # Always the whole object (records may span lines): `start` is 1 and a BOM is stripped.
    csv.field_size_limit(MAX_RECORD_CHARS)
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataFault(f"CSV header row is malformed: {exc}") from None
    names = [h.strip().lower() for h in header]
    if names.count("text") != 1 or names.count("id") > 1 or names.count("text_pair") > 1:
        # Without one 'text' column no row can be classified: one fault that names what the
        # header holds, not the same error on every row (or, with two, a guess between them).
        problem = (
            "no 'text' column"
            if "text" not in names
            else "more than one 'text', 'text_pair' or 'id'"
        )
        raise DataFault(f"CSV header has {problem}: found columns {header[:20]!r}"[:500])
    text_col = names.index("text")
    id_col = names.index("id") if "id" in names else None
    pair_col = names.index("text_pair") if "text_pair" in names else None
    n = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            n += 1
            yield Record(n, error=f"malformed CSV row (line {reader.line_num}): {exc}")
            continue
        n += 1
        if not all(_valid_utf8(f) for f in row):
            yield Record(n, error="not valid UTF-8")
            continue
        rid = row[id_col] if id_col is not None and id_col < len(row) else None
        if len(row) != len(header):
            yield Record(n, id=rid, error=f"row has {len(row)} fields, header has {len(header)}")
        else:
            value, error = _check_text(row[text_col])
            pair, pair_error = _check_pair(row[pair_col] if pair_col is not None else None)
            if error is None and pair_error is not None:
                value, error = None, pair_error
            yield Record(n, id=rid, text=value, error=error, text_pair=pair if value else None)


@dataclass(frozen=True)
class Inflation:
    """How far a .gz object may expand: an absolute budget of decompressed bytes, and a ratio to
    the compressed bytes read so far (checked once past `grace` bytes). Text compresses 3-10x;
    a gzip bomb (1 MiB of zeros or newlines expands ~1,000x) is stopped with a data fault that
    names the limit, within the first megabytes, instead of staging gigabytes of empty-line
    errors for hours."""

    max_bytes: int = 4 << 30
    max_ratio: float = 100.0
    grace: int = 1 << 20


class _BoundedGzip(gzip.GzipFile):
    """GzipFile that counts what it inflates (read and read1; peek is for the sniff only)."""

    def __init__(self, raw: _Raw, buffered: IO[bytes], limit: Inflation) -> None:
        super().__init__(fileobj=buffered, mode="rb")
        self._counter, self._limit, self._out = raw, limit, 0

    def _count(self, data: bytes) -> bytes:
        self._out += len(data)
        limit = self._limit
        if self._out > limit.max_bytes:
            raise DataFault(
                f"gzip: decompresses past {limit.max_bytes >> 20} MB (MAX_DECOMPRESSED_MB)"
            )
        if self._out > limit.grace and self._out > limit.max_ratio * max(
            self._counter.read_bytes, 1
        ):
            raise DataFault(
                f"gzip: expands more than {limit.max_ratio:g}x its compressed size "
                "(MAX_COMPRESSION_RATIO): a compression bomb, or data too repetitive to be text"
            )
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._count(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(super().read1(size))


class _Raw(io.RawIOBase):
    """Any object with read(n) (botocore's StreamingBody) as a raw stream io can buffer."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


class Reader:
    """The records of a stream (anything with read(n)) in `fmt`, gzip decompressed on the fly.

    Iterate once. A data fault ends the iteration quietly and is kept in `fault`; errors of the
    stream itself (network, throttling) still raise, so that a retry can fix them.
    """

    def __init__(
        self,
        stream: Any,
        fmt: str,
        gz: bool,
        first_record: int = 1,
        strip_bom: bool = True,
        inflation: Inflation | None = None,
    ) -> None:
        """`first_record`/`strip_bom`: a byte range of a line-per-record object that starts at a
        line boundary inside it (a shard) reads as the same records, numbered as in the whole."""
        self.fault: str | None = None
        if first_record != 1 and fmt == ".csv":
            raise ValueError("a CSV object is read from its start: records may span lines")
        self._start, self._strip_bom = first_record, strip_bom
        self._early_fault: str | None = None
        counter = _Raw(stream)
        raw = io.BufferedReader(counter, buffer_size=_READ)
        binary: IO[bytes] = raw
        self.gz = gz
        if gz:
            if not raw.peek(1):
                self._early_fault = "gzip: the object is empty (0 bytes), not a gzip stream"
            # GzipFile buffers and peeks itself; another BufferedReader on top would read it
            # with read(n), which loses the records before trailing garbage (read1 keeps them).
            binary = _BoundedGzip(counter, raw, inflation or Inflation())  # type: ignore[assignment]
        # At the object's start a UTF-8 byte-order mark (Excel's "CSV UTF-8", pandas'
        # utf-8-sig) is dropped by the decoder, before any parser sees it: a quoted first CSV
        # field behind it would otherwise be read as data, quotes and all.
        encoding, errors = ("utf-8-sig" if strip_bom else "utf-8"), "surrogateescape"
        if strip_bom and self._early_fault is None:  # the object's first bytes: sniff them
            try:
                head = binary.peek(SNIFF_BYTES)[:SNIFF_BYTES]  # type: ignore[attr-defined]
            except (gzip.BadGzipFile, EOFError, zlib.error):
                head = b""  # iterating raises it again and records the fault
            self._early_fault = container_fault(head)
            wide = wide_encoding(head)
            if wide is not None:  # UTF-16/32 with a byte-order mark: decoded, BOM dropped
                encoding, errors = wide, "strict"
        # Universal newlines for line formats: LF, CRLF and CR alone each end a line; csv reads
        # its own line ends (newline="").
        newline = "" if fmt == ".csv" else None
        self._text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline=newline)
        self._parse = {".jsonl": _jsonl, ".txt": _txt, ".csv": _csv}[fmt]

    def __iter__(self) -> Iterator[Record]:
        if self._early_fault is not None:
            self.fault = self._early_fault
            return
        try:
            yield from self._parse(self._text, self._start, self._strip_bom)
        except DataFault as exc:
            self.fault = str(exc)
        except UnicodeDecodeError as exc:  # only a strict (UTF-16/32) decoder raises
            self.fault = f"not valid {exc.encoding.upper()} text ({exc.reason})"
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            if not self.gz:  # only the gzip layer raises these on bad bytes
                raise
            self.fault = f"gzip: {exc or type(exc).__name__}"


def records(stream: Any, fmt: str, gz: bool, inflation: Inflation | None = None) -> Reader:
    return Reader(stream, fmt, gz, inflation=inflation)


def line_per_record(fmt: str, gz: bool) -> bool:
    """True when every physical line is one record and the bytes can be cut at any newline:
    uncompressed JSON Lines and text (CSV records may span lines; gzip can't be entered midway)."""
    return fmt in (".jsonl", ".txt") and not gz


def line_ranges(
    stream: Any, records_per_range: int, block: int = 8 << 20, skip: int = 0
) -> tuple[list[tuple[int, int, int, int]], int]:
    """Cut a line-per-record object into ranges of `records_per_range` records at line ends.

    One pass over the bytes finding line ends as `Reader` reads them (LF, CRLF, or CR alone;
    vectorised, no parsing). Returns ([(first_record, records, start, end), ...],
    total_records) with byte ranges [start, end). A last line without a line end is a record.
    The first `skip` records (done already) are in no range: the first range starts after them."""
    import numpy as np

    if records_per_range < 1:
        raise ValueError("records_per_range must be at least 1")
    ranges: list[tuple[int, int, int, int]] = []
    offset = lines = 0  # bytes and complete lines before this data
    start: int | None = 0 if skip == 0 else None  # the current range's start byte, once known
    begun = skip + 1  # the current range's first record
    last = b"\n"
    pending = b""  # a CR at the end of a block: whether it ends a line depends on the next byte
    while True:
        chunk = stream.read(block)
        data = pending + chunk
        if not data:
            break
        if chunk and data.endswith(b"\r"):
            data, pending = data[:-1], b"\r"
        else:
            pending = b""
        arr = np.frombuffer(data, np.uint8)
        lf, cr = arr == 0x0A, arr == 0x0D
        cr[:-1] &= ~lf[1:]  # the CR of a CRLF is not a line end of its own; the LF is
        ends = np.flatnonzero(lf | cr)
        if start is None and skip - 1 - lines < len(ends):  # the end of the last skipped line
            start = offset + int(ends[skip - 1 - lines]) + 1
        j = begun + records_per_range - 2 - lines  # index of the line end that ends the range
        while j < len(ends):
            end = offset + int(ends[j]) + 1
            assert start is not None  # found above: the range's end comes after it
            ranges.append((begun, records_per_range, start, end))
            start, begun = end, begun + records_per_range
            j += records_per_range
        lines += len(ends)
        offset += len(data)
        if len(data):
            last = data[-1:]
        if not chunk:
            break
    total = lines + (last not in (b"\n", b"\r"))
    if total >= begun:
        ranges.append((begun, total - begun + 1, offset if start is None else start, offset))
    return ranges, total

"""JSON in and out as RFC 8259 says: parse limits instead of crashes, no NaN or Infinity.

Python's json raises RecursionError on deep nesting and ValueError on integer literals over
4,300 digits, neither a JSONDecodeError, reads NaN/Infinity, which JSON does not have, and keeps
the last of repeated keys.
`loads` turns every one of those into a JSONProblem that names it; `dumps` never writes them.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # no request or record of this project nests more than a few levels


class JSONProblem(ValueError):
    """Text that is not JSON this project accepts; the message says why and where."""


def _reject_constant(name: str) -> Any:
    raise JSONProblem(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 leaves an object with a repeated name unpredictable (parsers keep the first,
    # the last or both): refused rather than silently taking one.
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONProblem(f"duplicate key {key[:80]!r} in an object")
            seen.add(key)
    return out


def loads(text: str, *, overflow_as_literal: bool = False) -> Any:
    """Parse `text`. A number too large for a double (1e400) is refused, or with
    `overflow_as_literal` kept as its literal string, so that it can be written back as JSON."""

    def parse_float(literal: str) -> Any:
        value = float(literal)
        if math.isfinite(value):
            return value
        if overflow_as_literal:
            return literal
        raise JSONProblem(f"number {literal[:40]} is out of range for a double")

    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=parse_float,
            object_pairs_hook=_no_duplicates,
        )
    except JSONProblem:
        raise
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONProblem(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # int literal over sys.get_int_max_str_digits()
        raise JSONProblem(f"a number literal is too long ({exc})") from None
    if _depth(value) > MAX_DEPTH:
        raise JSONProblem(f"nested deeper than {MAX_DEPTH} levels")
    return value


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 text kept as is; NaN/Infinity raise instead of being written."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)

"""strict_json: limits instead of crashes, RFC 8259 in and out."""

from __future__ import annotations

import json

import pytest

from handler import strict_json


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 5000 + "]" * 5000, "nested deeper"),
        ('{"a": ' * 100 + "1" + "}" * 100, "nested deeper"),
        ('{"top_k": ' + "9" * 5000 + "}", "number literal is too long"),
        ('{"id": NaN}', "NaN is not JSON"),
        ('{"id": -Infinity}', "-Infinity is not JSON"),
        ('{"x": 1e400}', "out of range"),
        ('{"x": ', "Expecting value"),
    ],
)
def test_bad_json_is_a_json_problem_naming_it(text: str, message: str) -> None:
    with pytest.raises(strict_json.JSONProblem, match=message):
        strict_json.loads(text)


def test_overflowing_number_can_be_kept_as_its_literal() -> None:
    value = strict_json.loads(
        '{"id": 1e400, "n": 2.5, "big": 123456789012345678901234567890}', overflow_as_literal=True
    )
    assert value == {"id": "1e400", "n": 2.5, "big": 123456789012345678901234567890}
    assert json.loads(strict_json.dumps(value)) == value


def test_dumps_never_writes_nan() -> None:
    with pytest.raises(ValueError):
        strict_json.dumps({"score": float("nan")})
    assert strict_json.dumps({"t": "café"}) == '{"t": "café"}'


def test_sixty_four_levels_are_fine() -> None:
    text = "[" * strict_json.MAX_DEPTH + "]" * strict_json.MAX_DEPTH
    assert strict_json.loads(text) is not None

"""Hostile HTTP bodies: parse limits and content checks give a 4xx with a JSON body, never 5xx.
Property-based: random bytes and random JSON values through the real lambda_handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.helpers import call, http_event, make_handler


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=4, max_text_chars=200, max_body_bytes=65536)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"[" * 20000 + b"]" * 20000, 400, "nested deeper"),
        (b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400, "nested deeper"),
        (b'{"inputs": "x", "options": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001, 400, "nested"),
        (b'{"inputs": "good", "parameters": {"top_k": ' + b"7" * 5000 + b"}}", 400, "too long"),
        (b'{"inputs": "good", "parameters": {"min_score": NaN}}', 400, "NaN"),
        (b'{"inputs": "good", "parameters": {"min_score": 1e999}}', 400, "out of range"),
    ],
)
def test_parse_limits_give_a_json_4xx(handler: Any, raw: bytes, status: int, message: str) -> None:
    code, body, _ = call(handler, http_event(raw=raw))
    assert code == status
    assert message in body["error"] and body["type"] == "MalformedBody"


@pytest.mark.parametrize(
    "text", ["\u200b", "\u200b\u200c\u200d", "\x00\x07\x1b", "\ufeff", " \u2060 \u00ad "]
)
def test_text_with_nothing_to_tokenise_is_refused_like_an_empty_text(
    handler: Any, text: str
) -> None:
    code, body, _ = call(handler, http_event({"inputs": text}))
    assert code == 422
    assert "input 0" in body["error"] and "no content" in body["error"]
    code, body, _ = call(handler, http_event({"inputs": ["good", text]}))
    assert code == 422 and "input 1" in body["error"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["inputs", "parameters", "options", "top_k", "x"])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_give_a_5xx(handler: Any, raw: bytes) -> None:
    # Base64, as API Gateway passes a binary body: any bytes at all reach the parser.
    code, body, _ = call(handler, http_event(raw=raw, b64=True))
    assert code < 500 and (code == 200 or "error" in body)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=JSON)
def test_random_json_never_gives_a_5xx(handler: Any, value: Any) -> None:
    for body_value in (value, {"inputs": value}, {"inputs": "good", "parameters": value}):
        code, body, _ = call(handler, http_event(raw=json.dumps(body_value).encode()))
        assert code < 500, body
        assert code == 200 or "error" in body

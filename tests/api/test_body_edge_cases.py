"""HTTP bodies at the edges: duplicate keys, upper-case function names, text the vocabulary
only knows as unknown, compressed bodies, HEAD /health, dot segments. Each ends in a clear 4xx
or the right answer, through the real lambda_handler."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import call, http_event, make_handler


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=4, max_text_chars=200, max_body_bytes=4096)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"inputs": "the movie was great", "inputs": "bad"}', "inputs"),
        (b'{"inputs": "good", "parameters": {"top_k": 1, "top_k": 2}}', "top_k"),
        (b'{"inputs": "good", "options": {"a": {"b": 1, "b": 2}}}', "b"),
    ],
)
def test_a_repeated_key_is_refused_naming_it(handler: Any, raw: bytes, key: str) -> None:
    code, body, _ = call(handler, http_event(raw=raw))
    assert code == 400 and body["type"] == "MalformedBody"
    assert f"duplicate key {key!r}" in body["error"]


@pytest.mark.parametrize("name", ["SOFTMAX", "Sigmoid", "NONE", "Default"])
def test_function_to_apply_in_any_case_as_the_pipeline(handler: Any, name: str) -> None:
    params = {"top_k": None, "function_to_apply": name}
    code, got, _ = call(handler, http_event({"inputs": "good", "parameters": params}))
    lower = {"top_k": None, "function_to_apply": name.lower()}
    _, want, _ = call(handler, http_event({"inputs": "good", "parameters": lower}))
    assert code == 200 and got == want


def test_an_unknown_function_name_is_still_refused(handler: Any) -> None:
    params = {"function_to_apply": "SOFTMAXX"}
    code, body, _ = call(handler, http_event({"inputs": "good", "parameters": params}))
    assert code == 422 and "function_to_apply" in body["error"]


@pytest.mark.parametrize("text", ["😀" * 50, "🎉 🎉 🎉", "漢字のみ"])
def test_text_the_vocabulary_only_knows_as_unknown_is_refused(handler: Any, text: str) -> None:
    code, body, _ = call(handler, http_event({"inputs": ["good", text]}))
    assert code == 422 and "input 1" in body["error"]
    assert "no token the model's vocabulary knows" in body["error"]


def test_text_with_one_known_word_among_emoji_is_answered(handler: Any) -> None:
    code, body, _ = call(handler, http_event({"inputs": "😀 great 😀"}))
    assert code == 200 and body[0]["label"] in ("POSITIVE", "NEGATIVE")


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_gets_415_naming_the_encoding(handler: Any, encoding: str) -> None:
    event = http_event(raw=gzip.compress(b'{"inputs": "good"}'), b64=True)
    event["headers"]["content-encoding"] = encoding
    code, body, _ = call(handler, event)
    assert code == 415 and encoding in body["error"]


def test_identity_encoding_is_served(handler: Any) -> None:
    event = http_event({"inputs": "good"})
    event["headers"]["content-encoding"] = "identity"
    assert call(handler, event)[0] == 200


def test_head_health_answers_200_without_a_body(handler: Any) -> None:
    event = http_event(path="/health", method="HEAD")
    response = handler(event, __import__("handler.local.context").local.context.LocalContext())
    assert response["statusCode"] == 200 and not response.get("body")
    assert call(handler, http_event(path="/health", method="GET"))[1]["status"] == "ok"


@pytest.mark.parametrize("path", ["/x/../classify", "/./classify", "/a/./b/../../classify"])
def test_dot_segments_are_refused_not_offered_as_a_base_path(handler: Any, path: str) -> None:
    code, body, _ = call(handler, http_event({"inputs": "good"}, path=path))
    assert code == 400 and "dot segments" in body["error"]
    assert "API_BASE_PATH" not in body["error"]


def test_a_real_base_path_still_gets_its_hint(handler: Any) -> None:
    code, body, _ = call(handler, http_event({"inputs": "good"}, path="/sentiment/classify"))
    assert code == 404 and "API_BASE_PATH=/sentiment" in body["error"]


def test_a_dotted_file_name_is_not_a_dot_segment(handler: Any) -> None:
    event = copy.deepcopy(http_event({"inputs": "good"}, path="/.well-known/x"))
    code, body, _ = call(handler, event)
    assert code == 404 and "dot segments" not in body["error"]

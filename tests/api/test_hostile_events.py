"""Event shapes API Gateway, ALB and Function URLs really send that Mangum cannot read, and
error bodies that must stay small whatever the input: each a clear answer, never a traceback."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from handler.api.errors import MAX_DETAILS
from handler.local.context import LocalContext
from tests.api.helpers import call, http_event, make_handler
from tests.conftest import load_event

EVENTS = ["alb-classify.json", "function-url-classify.json", "apigw-http-classify.json"]


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=4, max_text_chars=200, max_body_bytes=1 << 20)


@pytest.mark.parametrize("name", [*EVENTS, "apigw-rest-classify.json"])
@pytest.mark.parametrize("body", ["not base64!", "abc", "{}", "@@@@", "aGk=x"])
def test_a_body_marked_base64_that_is_not_is_a_400(handler: Any, name: str, body: str) -> None:
    event = copy.deepcopy(load_event(name))
    event["body"], event["isBase64Encoded"] = body, True
    code, got, _ = call(handler, event)
    assert code == 400 and "isBase64Encoded" in got["error"] and got["type"] == "MalformedBody"


@pytest.mark.parametrize("name", EVENTS)
def test_a_real_base64_body_is_still_read(handler: Any, name: str) -> None:
    event = copy.deepcopy(load_event(name))
    event["body"] = base64.b64encode(json.dumps({"inputs": "great"}).encode()).decode()
    event["isBase64Encoded"] = True
    code, got, _ = call(handler, event)
    assert code == 200 and isinstance(got[0]["label"], str)


@pytest.mark.parametrize("name", ["alb-classify.json", "function-url-classify.json"])
@pytest.mark.parametrize("host", ["[2001:db8::1]", "[2001:db8::1]:8443", "[::1]:80"])
def test_an_ipv6_host_is_answered(handler: Any, name: str, host: str) -> None:
    event = copy.deepcopy(load_event(name))
    event["headers"]["host"] = host
    event["body"], event["isBase64Encoded"] = json.dumps({"inputs": "great"}), False
    code, got, _ = call(handler, event)
    assert code == 200 and isinstance(got[0]["score"], float)


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [1] * 200_000},
        {"inputs": "good", **{f"unknown_{i}": 1 for i in range(30_000)}},
        {"inputs": "good", "parameters": {"k" * 5000 + str(i): 1 for i in range(100)}},
    ],
)
def test_an_error_body_stays_small_whatever_the_input(handler: Any, body: Any) -> None:
    event = http_event(body)
    assert len(event["body"]) > 200_000
    response = handler(event, LocalContext())
    assert response["statusCode"] == 422
    assert len(response["body"]) < 8_000, len(response["body"])
    got = json.loads(response["body"])
    assert len(got["details"]) == MAX_DETAILS and got["details_total"] > MAX_DETAILS


@pytest.mark.parametrize("base", ["/", "/sentiment"])
@pytest.mark.parametrize("path", ["/classify/", "/health/", "/classify//"])
def test_a_trailing_slash_is_a_json_404_never_a_redirect(
    tiny_model: Path, base: str, path: str
) -> None:
    handler = make_handler(tiny_model, api_base_path=base)
    full = (base.rstrip("/") + path) if base != "/" else path
    method = "GET" if path.startswith("/health") else "POST"
    event = http_event({"inputs": "great"}, path=full, method=method)
    response = handler(event, LocalContext())
    assert response["statusCode"] == 404, response
    assert "location" not in {k.lower() for k in response.get("headers", {})}
    got = json.loads(response["body"])
    assert "trailing slash" in got["error"] and path.rstrip("/") in got["error"]


def test_an_ipv6_host_in_alb_multi_value_headers_is_answered(handler: Any) -> None:
    event = copy.deepcopy(load_event("alb-classify.json"))
    headers = event.pop("headers")
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    event["multiValueHeaders"]["host"] = ["[2001:db8::1]:8443"]
    event["body"], event["isBase64Encoded"] = json.dumps({"inputs": "great"}), False
    response = handler(event, LocalContext())
    assert response["statusCode"] == 200, response
    assert isinstance(json.loads(response["body"])[0]["score"], float)

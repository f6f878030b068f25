"""huggingface_hub's own InferenceClient and AsyncInferenceClient against POST /: over HTTP on
`serve` (uvicorn) and on `serve --through-lambda` (each request an HTTP API event through
lambda_handler), and through lambda_handler in-process."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.inference import Classifier
from handler.local.context import LocalContext
from handler.local.gateway import http_api_event
from tests.api.helpers import make_handler, serving

hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module", params=["uvicorn", "through-lambda"])
def api_url(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[str]:
    with serving(tiny_model, through_lambda=request.param == "through-lambda") as url:
        yield url


def _pairs(elements: list[Any]) -> list[tuple[str, float]]:
    return [(e.label, round(e.score, 6)) for e in elements]


def _expected(tiny_model: Path, text: str, function: str | None = None) -> list[tuple[str, float]]:
    clf = Classifier.from_dir(tiny_model)
    answer = clf.predict(text, top_k=None, function_to_apply=function)
    return [(d["label"], round(d["score"], 6)) for d in answer]


def test_inference_client_gets_every_label_best_first(api_url: str, tiny_model: Path) -> None:
    client = hub.InferenceClient(model=api_url)
    for text in ("great fun", "awful plot"):
        out = client.text_classification(text)
        assert isinstance(out, list) and len(out) == 2
        assert _pairs(out) == _expected(tiny_model, text)


def test_inference_client_top_k_and_function_to_apply(api_url: str, tiny_model: Path) -> None:
    client = hub.InferenceClient(model=api_url)
    top1 = client.text_classification("great fun", top_k=1)
    assert _pairs(top1) == _expected(tiny_model, "great fun")[:1]
    top2 = client.text_classification("awful plot", top_k=2)
    assert _pairs(top2) == _expected(tiny_model, "awful plot")
    raw = client.text_classification("great fun", function_to_apply="none")
    assert _pairs(raw) == _expected(tiny_model, "great fun", "none")
    assert any(e.score > 1 or e.score < 0 for e in raw)  # logits, not probabilities
    sig = client.text_classification("great fun", function_to_apply="sigmoid")
    assert _pairs(sig) == _expected(tiny_model, "great fun", "sigmoid")


def test_async_inference_client(api_url: str, tiny_model: Path) -> None:
    async def call() -> list[Any]:
        client = hub.AsyncInferenceClient(model=api_url)
        result: list[Any] = await client.text_classification("awful plot", top_k=1)
        return result

    assert _pairs(asyncio.run(call())) == _expected(tiny_model, "awful plot")[:1]


def test_classify_keeps_the_pipeline_contract(api_url: str) -> None:
    req = urllib.request.Request(
        f"{api_url}/classify", data=b'{"inputs": "great fun"}', method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer = json.loads(resp.read())
    assert len(answer) == 1 and set(answer[0]) == {"label", "score"}


def test_root_route_through_lambda_handler(tiny_model: Path) -> None:
    handler = make_handler(tiny_model)
    body = json.dumps({"inputs": ["great fun", "awful plot"], "parameters": {"top_k": 1}})
    event = http_api_event("POST", "/", {"content-type": "application/json"}, body.encode(), "h")
    response = handler(event, LocalContext())
    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert [[d["label"] for d in row] for row in answer] == [["POSITIVE"], ["NEGATIVE"]]
    one = http_api_event("POST", "/", {}, b'{"inputs": "great fun"}', "h")
    single = json.loads(handler(one, LocalContext())["body"])
    assert len(single) == 1 and len(single[0]) == 2  # [[...]]: every label for one text
    bad = http_api_event("POST", "/", {}, b'{"inputs": 3}', "h")
    assert handler(bad, LocalContext())["statusCode"] == 422

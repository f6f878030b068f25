"""The HTTP answers equal transformers' pipeline("text-classification") for the same model and
calls: same shapes, same labels in the same order, scores within 1e-4 (fp32 build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from handler.compiler.pipeline import BuildOptions, build
from tests.api.helpers import call, http_event, make_handler, same_as_pipeline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None
        or importlib.util.find_spec("torch") is None,
        reason="the contract test needs transformers and torch",
    ),
]
TEXTS = [
    "A masterpiece: moving, funny and beautifully acted.",
    "A tedious, badly written waste.",
    "The film is fine, I guess.",
    "Crème brûlée 😀 東京 — ok",
]
CALLS: list[tuple[Any, dict[str, Any]]] = [
    (TEXTS[0], {}),
    (TEXTS, {}),
    (TEXTS[2], {"top_k": None}),
    (TEXTS, {"top_k": None}),
    (TEXTS[1], {"top_k": 1}),
    (TEXTS, {"top_k": 1}),
    (TEXTS, {"top_k": 2, "function_to_apply": "sigmoid"}),
    (TEXTS[3], {"function_to_apply": "none"}),
    (TEXTS, {"top_k": None, "function_to_apply": "none"}),
]


@pytest.fixture(scope="module")
def pipe(standin_dir: Path) -> Any:
    from transformers import pipeline

    return pipeline("text-classification", model=str(standin_dir), device="cpu")


@pytest.fixture(scope="module")
def handler(standin_dir: Path, standin_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("contract") / "fp32"
    build(BuildOptions(model=str(standin_dir), target="none", out=out, eval_path=standin_data))
    return make_handler(out)


@pytest.mark.parametrize(("inputs", "params"), CALLS)
def test_http_answer_equals_pipeline(
    handler: Any, pipe: Any, inputs: Any, params: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"inputs": inputs}
    if params:
        body["parameters"] = params
    status, ours, _ = call(handler, http_event(body))
    assert status == 200
    same_as_pipeline(ours, pipe(inputs, **params))

"""A request's work is bounded in tokens (MAX_REQUEST_TOKENS), not only in texts and characters:
past the budget it is a 413 that names the budget, whatever route and event shape it came by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from handler import config
from handler.config import REQUEST_TOKENS_PER_VCPU, Settings
from handler.errors import ConfigError
from tests.api.helpers import call, http_event, make_handler
from tests.tiny import MAX_LENGTH

LONG = "great " * 100  # truncated to the tiny model's MAX_LENGTH tokens
BUDGET = 3 * MAX_LENGTH + 4


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=64, max_request_tokens=BUDGET)


@pytest.mark.parametrize("path", ["/classify", "/"])
def test_texts_within_the_budget_are_answered(handler: Any, path: str) -> None:
    code, got, _ = call(handler, http_event({"inputs": [LONG] * 3}, path=path))
    assert code == 200 and len(got) == 3


@pytest.mark.parametrize("path", ["/classify", "/"])
def test_past_the_budget_is_a_413_naming_it(handler: Any, path: str) -> None:
    code, got, _ = call(handler, http_event({"inputs": [LONG] * 4}, path=path))
    assert code == 413 and got["type"] == "InputTooLarge"
    assert f"{4 * MAX_LENGTH} tokens" in got["error"]
    assert f"budget is {BUDGET} tokens" in got["error"] and "MAX_REQUEST_TOKENS" in got["error"]


def test_tokens_are_counted_not_texts(handler: Any) -> None:
    """Many short texts fit where a few long ones do not: the budget is the model's work."""
    short = ["great"] * 30  # 3 tokens each with [CLS] and [SEP]: 90 tokens
    assert 3 * len(short) <= BUDGET
    code, got, _ = call(handler, http_event({"inputs": short}))
    assert code == 200 and len(got) == len(short)


def test_a_budget_below_the_models_length_still_takes_one_full_text(tiny_model: Path) -> None:
    h = make_handler(tiny_model, max_request_tokens=5)
    code, _, _ = call(h, http_event({"inputs": LONG}))
    assert code == 200
    code, got, _ = call(h, http_event({"inputs": [LONG, LONG]}))
    assert code == 413 and f"budget is {MAX_LENGTH} tokens" in got["error"]


def test_the_model_route_says_the_budget(handler: Any) -> None:
    code, got, _ = call(handler, http_event(path="/model", method="GET"))
    assert code == 200 and got["limits"]["max_request_tokens"] == BUDGET


@pytest.mark.parametrize(
    ("memory", "cpus", "expected"),
    [
        ("1769", 4, REQUEST_TOKENS_PER_VCPU),
        ("3538", 4, 2 * REQUEST_TOKENS_PER_VCPU),
        ("885", 4, int(REQUEST_TOKENS_PER_VCPU * 885 / 1769)),
        ("10240", 8, int(REQUEST_TOKENS_PER_VCPU * 10240 / 1769)),
        ("3538", 1, REQUEST_TOKENS_PER_VCPU),  # not more than the CPUs there are
    ],
)
def test_the_default_budget_follows_the_memory_size(
    monkeypatch: pytest.MonkeyPatch, memory: str, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(config, "_available_cpus", lambda: cpus)
    s = Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory})
    assert s.max_request_tokens == expected
    assert "per vCPU" in s.max_request_tokens_origin


def test_an_explicit_budget_wins_and_a_bad_one_is_refused() -> None:
    s = Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769", "MAX_REQUEST_TOKENS": "777"})
    assert s.max_request_tokens == 777 and s.max_request_tokens_origin == "MAX_REQUEST_TOKENS"
    for bad in ("0", "many", "-5"):
        with pytest.raises(ConfigError, match="MAX_REQUEST_TOKENS"):
            Settings.from_env({"MAX_REQUEST_TOKENS": bad})

"""`parameters.long_text` on both routes: `windows` reads a long text whole and says how many
windows each text took; `truncate` (the default) answers as the pipeline; the request's token
budget counts every window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import call, http_event, make_handler
from tests.inference.test_long_text import LONG

TEXT = "good great fun loved best " * 6 + "awful dull worst boring terrible " * 30


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=8)


@pytest.mark.parametrize("path", ["/classify", "/"])
def test_windows_read_the_whole_text_and_say_how_many(handler: Any, path: str) -> None:
    body = {"inputs": [TEXT, "good"], "parameters": {"long_text": "windows"}}
    code, got, headers = call(handler, http_event(body, path=path))
    assert code == 200
    counts = [int(n) for n in headers["x-long-text-windows"].split(",")]
    assert counts[0] > 1 and counts[1] == 1
    assert "x-truncated-inputs" not in headers  # read whole: nothing cut
    first = got[0] if path == "/classify" else got[0][0]
    assert first["label"] == "NEGATIVE"  # the end of the text, which truncation never reads


def test_truncate_is_the_default_and_the_pipelines_answer(handler: Any) -> None:
    code, default, headers = call(handler, http_event({"inputs": TEXT}))
    assert code == 200 and default[0]["label"] == "POSITIVE"
    assert headers["x-truncated-inputs"] == "0" and "x-long-text-windows" not in headers
    said = {"inputs": TEXT, "parameters": {"long_text": "truncate"}}
    assert call(handler, http_event(said))[1] == default


def test_a_short_text_answers_the_same_either_way(handler: Any) -> None:
    plain = call(handler, http_event({"inputs": "i loved the plot"}))[1]
    windows = {"inputs": "i loved the plot", "parameters": {"long_text": "windows"}}
    assert call(handler, http_event(windows))[1] == plain


@pytest.mark.parametrize("bad", ["chunks", 1, "WINDOWS ", ["windows"]])
def test_an_unknown_long_text_is_a_422_naming_it(handler: Any, bad: Any) -> None:
    code, got, _ = call(handler, http_event({"inputs": "good", "parameters": {"long_text": bad}}))
    assert code == 422 and "long_text" in got["error"]


def test_the_token_budget_counts_every_window(tiny_model: Path) -> None:
    h = make_handler(tiny_model, max_request_tokens=100)
    assert call(h, http_event({"inputs": [LONG, LONG]}))[0] == 200  # 2 x 32 tokens truncated
    body = {"inputs": [LONG, LONG], "parameters": {"long_text": "windows"}}
    code, got, _ = call(h, http_event(body))
    assert (
        code == 413 and "every window counted" in got["error"] and "budget is 100" in got["error"]
    )


def test_the_rows_metric_counts_every_window(
    handler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`Rows` is what the model ran (a window each), `Texts` what was asked: they differ exactly
    by the windows, where the old `BatchSize` always equalled `Texts`."""
    import json

    capsys.readouterr()
    body = {"inputs": [TEXT, "good"], "parameters": {"long_text": "windows"}}
    code, _, headers = call(handler, http_event(body))
    assert code == 200
    windows = sum(int(n) for n in headers["x-long-text-windows"].split(","))
    docs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if '"_aws"' in ln]
    figures = next(d for d in docs if "Rows" in d)
    assert figures["Texts"] == [2.0] and figures["Rows"] == [float(windows)] and windows > 2

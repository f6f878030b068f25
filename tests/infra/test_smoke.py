"""scripts/smoke.py, the deploy workflow's smoke request: what it signs and what it accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "scripts" / "smoke.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_pipeline_shape_for_one_text_passes() -> None:
    smoke = _smoke()
    assert smoke.check([{"label": "POSITIVE", "score": 0.98}]) is None
    assert "expected [{label, score}]" in smoke.check({"label": "POSITIVE", "score": 0.9})
    assert "expected [{label, score}]" in smoke.check([])
    assert "a label and a score" in smoke.check([{"label": "POSITIVE", "score": "0.9"}])


def test_the_request_is_sigv4_signed_for_execute_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/classify"
    request = _smoke().signed_request(url, b'{"inputs": "x"}', "eu-west-1")
    auth = request.get_header("Authorization")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in auth
    assert request.get_method() == "POST" and request.full_url == url

"""Every supported event shape through the real lambda_handler (events are data in tests/events)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.errors import UnsupportedEvent
from handler.local.context import LocalContext
from tests.api.helpers import call, make_handler
from tests.conftest import EVENTS, load_event


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("apigw-rest-classify.json", ["POSITIVE", "NEGATIVE"]),
        ("apigw-http-classify.json", ["POSITIVE", "NEGATIVE"]),  # top_k=None: all labels
        ("alb-classify.json", [["POSITIVE"], ["NEGATIVE"]]),  # top_k=1 on a list nests
        ("function-url-classify.json", ["NEGATIVE"]),
        ("apigw-http-base64.json", ["POSITIVE", "NEGATIVE"]),
    ],
)
def test_http_shapes(handler: Any, name: str, expected: list[Any]) -> None:
    status, body, headers = call(handler, load_event(name))
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    labels = [[d["label"] for d in a] if isinstance(a, list) else a["label"] for a in body]
    assert labels == expected


def test_custom_domain_base_path(tiny_model: Path) -> None:
    event = load_event("apigw-rest-custom-domain.json")
    status, body, _ = call(make_handler(tiny_model, api_base_path="/sentiment"), event)
    assert status == 200 and body[0]["label"] == "POSITIVE"
    status, _, _ = call(make_handler(tiny_model), event)
    assert status == 404


def test_health_event(handler: Any) -> None:
    status, body, _ = call(handler, load_event("apigw-http-health.json"))
    assert status == 200 and body["status"] == "ok"


def test_warmup_loads_and_predicts(handler: Any) -> None:
    out = handler(load_event("warmup.json"), LocalContext())
    assert out["warm"] is True and out["sample"][0]["label"] in out["labels"]


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (load_event("unknown.json"), "keys [detail, detail-type, source]"),
        ({"Records": [{"eventSource": "aws:dynamodb"}]}, "aws:dynamodb"),
        ({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}, "Object Deleted"),
        ([1, 2], "a list"),
        ({}, "keys [none]"),
    ],
)
def test_unknown_events_are_named(handler: Any, event: Any, fragment: str) -> None:
    with pytest.raises(UnsupportedEvent, match="unsupported event") as info:
        handler(event, LocalContext())
    assert fragment in str(info.value)


def test_logs_carry_request_id_and_cold_start_but_never_text(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from handler.observability import logger

    handler = make_handler(tiny_model)
    event = load_event("apigw-rest-classify.json")
    secret = "a very secret review text"
    event["body"], event["isBase64Encoded"] = json.dumps({"inputs": secret}), False
    stream = io.StringIO()
    previous = logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
    logger.setLevel("DEBUG")
    try:
        handler(event, LocalContext(aws_request_id="req-123"))
    finally:
        logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]
        logger.setLevel("INFO")
    out = stream.getvalue() + capsys.readouterr().out
    logs = [json.loads(line) for line in out.splitlines() if '"level"' in line]
    assert logs and all(log["function_request_id"] == "req-123" for log in logs)
    assert all("cold_start" in log for log in logs)
    assert secret not in out
    metrics = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    names = {
        m["Name"] for doc in metrics for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"Latency", "Texts", "Tokens", "Truncations", "LowConfidence", "Rows"} <= names


def test_second_invocation_does_not_reload_the_model(tiny_model: Path) -> None:
    script = f"""
import json
import handler.inference.classifier as c
loads = []
original = c.Classifier.from_dir.__func__
c.Classifier.from_dir = classmethod(lambda cls, *a, **k: loads.append(1) or original(cls, *a, **k))
from handler import lambda_handler
from handler.local.context import LocalContext
event = json.load(open({str(EVENTS / "apigw-http-classify.json")!r}))
codes = [lambda_handler(event, LocalContext())["statusCode"] for _ in range(3)]
print(json.dumps({{"loads": len(loads), "codes": codes}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": ""},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loads": 1, "codes": [200, 200, 200]}


def test_invoke_cli_runs_an_event_file(tiny_model: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "handler",
            "invoke",
            "--event",
            str(EVENTS / "apigw-rest-classify.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": ""},
    )
    response = json.loads(out.stdout)  # stdout is the response only: metrics go to stderr
    assert response["statusCode"] == 200
    assert [d["label"] for d in json.loads(response["body"])] == ["POSITIVE", "NEGATIVE"]

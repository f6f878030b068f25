"""Call the real lambda_handler with API events built from the fixtures in tests/events."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.config import Settings
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
from handler.local.context import LocalContext
from tests.conftest import load_event


def make_handler(model_dir: Path, **overrides: Any) -> Any:
    settings = Settings(model_dir=model_dir, num_threads=1, **overrides)
    return make_lambda_handler(LambdaFunction(settings, get_model(model_dir, 1)))


def http_event(
    body: Any = None,
    *,
    raw: bytes | None = None,
    path: str = "/classify",
    method: str = "POST",
    b64: bool = False,
) -> dict[str, Any]:
    event = copy.deepcopy(load_event("apigw-http-classify.json"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is None:
        event.pop("body", None)
    elif b64:
        event["body"], event["isBase64Encoded"] = base64.b64encode(data).decode(), True
    else:
        event["body"], event["isBase64Encoded"] = data.decode("utf-8"), False
    return event


def call(handler: Any, event: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    response = handler(event, LocalContext())
    body = response.get("body") or "null"
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], json.loads(body), response.get("headers", {})


def same_as_pipeline(ours: Any, theirs: Any) -> None:
    """An answer equals transformers' pipeline's: the same nesting, the same keys and labels in
    the same order, scores within 1e-4."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            same_as_pipeline(a, b)
    else:
        assert isinstance(ours, dict) and set(ours) == set(theirs) == {"label", "score"}
        assert ours["label"] == theirs["label"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


@contextlib.contextmanager
def serving(model_dir: Path, through_lambda: bool = False) -> Iterator[str]:
    """`python -m handler serve` on a free port (through lambda_handler if asked): its URL once
    /health answers; stopped on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--through-lambda"] if through_lambda else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "handler", "serve", "--port", str(port), *extra],
        env={**os.environ, "MODEL_DIR": str(model_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"serve {extra} did not answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)

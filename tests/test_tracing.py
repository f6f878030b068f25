"""Opt-in X-Ray tracing: with POWERTOOLS_TRACE_DISABLED=false on Lambda, an invocation is traced
with a span for each stage of the core (tokenise, inference, postprocess); off (the default),
nothing of the X-Ray SDK is even imported. Run in a fresh process each: the SDK patches boto3
process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from handler.config import Settings

TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
SCRIPT = """
import json, sys
from aws_xray_sdk.core import xray_recorder

class Collect:
    def __init__(self): self.names = []
    def send_entity(self, entity):
        def walk(e):
            self.names.append(e.name)
            for s in getattr(e, "subsegments", []): walk(s)
        walk(entity)
    def set_daemon_address(self, address): pass
    @property
    def ip(self): return "127.0.0.1"
    @property
    def port(self): return 2000

collected = Collect()
xray_recorder.configure(emitter=collected, streaming_threshold=1000)
from handler.config import Settings
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
from handler.local.context import LocalContext
from tests.api.helpers import http_event
from pathlib import Path
model = Path(sys.argv[1])
settings = Settings.from_env()
handler = make_lambda_handler(LambdaFunction(settings, get_model(model, 1)))
response = handler(http_event({"inputs": ["great fun", "awful"]}), LocalContext())
print(json.dumps({"status": response["statusCode"], "spans": collected.names}))
"""


def _traced(model: Path, disabled: str) -> dict[str, object]:
    env = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(model.parent),
        "MODEL_DIR": str(model),
        "FUNCTION_ROLE": "api",
        "POWERTOOLS_TRACE_DISABLED": disabled,
        "_X_AMZN_TRACE_ID": TRACE_ID,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_tracing_on_gives_a_span_per_stage(tiny_model: Path) -> None:
    got = _traced(tiny_model, "false")
    assert got["status"] == 200
    spans = got["spans"]
    assert isinstance(spans, list)
    assert {"tokenise", "inference", "postprocess"} <= set(spans), spans
    assert any(str(s).startswith("## ") for s in spans), spans  # the handler's own subsegment


def test_tracing_off_records_nothing(tiny_model: Path) -> None:
    got = _traced(tiny_model, "true")
    assert got["status"] == 200 and got["spans"] == []


def test_tracing_is_off_unless_on_lambda_and_asked() -> None:
    asked = {"POWERTOOLS_TRACE_DISABLED": "false", "MODEL_DIR": "/nowhere"}
    assert not Settings.from_env(asked).tracing  # not on Lambda
    assert Settings.from_env({**asked, "LAMBDA_TASK_ROOT": "/var/task"}).tracing
    assert not Settings.from_env({"LAMBDA_TASK_ROOT": "/var/task", "MODEL_DIR": "/x"}).tracing


def test_an_untraced_function_never_imports_the_xray_sdk(tiny_model: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from handler.config import Settings;"
        "from handler.function import LambdaFunction, make_lambda_handler;"
        "from handler.loading import get_model;"
        f"m = Path({str(tiny_model)!r});"
        "s = Settings(model_dir=m, num_threads=1);"
        "make_lambda_handler(LambdaFunction(s, get_model(m, 1)));"
        "print('aws_xray_sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"

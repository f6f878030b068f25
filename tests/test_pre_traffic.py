"""The PreTraffic hook (handler/pre_traffic.py) without AWS: CodeDeploy's API stubbed with
botocore's Stubber, and the version under deployment a real lambda_handler invoked in-process
(as Lambda would invoke it: the event as JSON, the response as JSON). A right version succeeds;
the model missing, a different artifact, one answer off and a timeout each fail, with a reason
that names the problem, and CodeDeploy is told either way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber

from handler import pre_traffic
from handler.errors import ClassifierError
from handler.manifest import MANIFEST
from tests.api.helpers import make_handler

HOOK_EVENT = {"DeploymentId": "d-ABC123", "LifecycleEventHookExecutionId": "hook-exec-1"}
VERSION = "arn:aws:lambda:us-east-1:123456789012:function:stack-api:7"


def _codedeploy(status: str) -> tuple[Any, Stubber]:
    client = boto3.client("codedeploy", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response(
        "put_lifecycle_event_hook_execution_status",
        {"lifecycleEventHookExecutionId": "hook-exec-1"},
        {
            "deploymentId": "d-ABC123",
            "lifecycleEventHookExecutionId": "hook-exec-1",
            "status": status,
        },
    )
    stub.activate()
    return client, stub


def _in_process(model_dir: Path) -> pre_traffic.Invoke:
    """The version: the real lambda_handler on `model_dir`, its event and answer through JSON;
    an error at init or in the handler is a FunctionError, as Lambda reports it."""
    calls: list[str] = []

    def invoke(target: str, event: dict[str, Any]) -> dict[str, Any]:
        assert target == VERSION, "the hook invokes the version under deployment"
        calls.append(event["rawPath"])
        try:
            handler = make_handler(model_dir)
            payload = handler(json.loads(json.dumps(event)), _Context())
        except ClassifierError as exc:
            return {"FunctionError": "Unhandled", "Payload": {"errorMessage": str(exc)}}
        return {"FunctionError": None, "Payload": json.loads(json.dumps(payload))}

    invoke.calls = calls  # type: ignore[attr-defined]
    return invoke


class _Context:
    function_name = "stack-api"
    function_version = "7"
    invoked_function_arn = VERSION
    memory_limit_in_mb = 2048
    aws_request_id = "req"
    log_group_name = "/aws/lambda/stack-api"
    log_stream_name = "s"
    identity = None
    client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _run(image: Path, version: Path, status: str, **env: str) -> dict[str, Any]:
    client, stub = _codedeploy(status)
    invoke = _in_process(version)
    result = pre_traffic.run(
        HOOK_EVENT,
        invoke,
        client,
        {"MODEL_DIR": str(image), "TARGET_FUNCTION": VERSION, **env},
    )
    stub.assert_no_pending_responses()  # CodeDeploy was told, with exactly this status
    assert result["status"] == status, result
    return result


def test_the_build_records_confident_answers_for_every_label(tiny_model: Path) -> None:
    recorded = json.loads((tiny_model / MANIFEST).read_text())["recorded_answers"]
    assert 2 <= len(recorded["texts"]) == len(recorded["answers"])
    assert {a[0]["label"] for a in recorded["answers"]} == {"NEGATIVE", "POSITIVE"}
    for ranked in recorded["answers"]:
        assert ranked[0]["score"] - ranked[1]["score"] > 2 * recorded["score_tolerance"]


def test_a_right_version_takes_traffic(tiny_model: Path) -> None:
    result = _run(tiny_model, tiny_model, "Succeeded")
    assert "recorded answers within" in result["reason"]


def test_the_model_missing_fails(tiny_model: Path, tmp_path: Path) -> None:
    result = _run(tiny_model, tmp_path / "no-model", "Failed")
    assert "GET /health: the version failed" in result["reason"]
    assert "not a built model folder" in result["reason"]


def test_a_different_artifact_fails(tiny_model: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["built_at"] = "2026-01-01T00:00:00+00:00"  # another build of the same files
    (other / MANIFEST).write_text(json.dumps(manifest))
    result = _run(tiny_model, other, "Failed")
    assert "the version serves manifest" in result["reason"]


def test_a_pinned_digest_is_what_the_version_must_serve(tiny_model: Path) -> None:
    result = _run(tiny_model, tiny_model, "Failed", EXPECTED_MANIFEST_SHA256="0" * 64)
    assert "expected " + "0" * 64 in result["reason"]


@pytest.mark.parametrize("field", ["score", "label"])
def test_one_answer_off_fails(tiny_model: Path, tmp_path: Path, field: str) -> None:
    image = tmp_path / "image"
    shutil.copytree(tiny_model, image)
    manifest = json.loads((image / MANIFEST).read_text())
    first = manifest["recorded_answers"]["answers"][0]
    if field == "score":
        first[0]["score"] -= 2 * manifest["recorded_answers"]["score_tolerance"]
    else:
        first.reverse()
    (image / MANIFEST).write_text(json.dumps(manifest))
    # The version serves the image's own manifest (a copy with the recorded answers edited):
    result = _run(image, image, "Failed")
    assert result["reason"].startswith("text 0: "), result["reason"]


def test_a_timeout_fails_and_codedeploy_is_still_told(tiny_model: Path) -> None:
    client, stub = _codedeploy("Failed")

    def times_out(target: str, event: dict[str, Any]) -> dict[str, Any]:
        raise ReadTimeoutError(endpoint_url="https://lambda.us-east-1.amazonaws.com")

    result = pre_traffic.run(
        HOOK_EVENT, times_out, client, {"MODEL_DIR": str(tiny_model), "TARGET_FUNCTION": VERSION}
    )
    stub.assert_no_pending_responses()
    assert result["status"] == "Failed" and "ReadTimeoutError" in result["reason"]


def test_a_version_that_timed_out_inside_lambda_fails(tiny_model: Path) -> None:
    """Lambda's own timeout: the invoke returns, with FunctionError and Sandbox.Timedout."""
    client, stub = _codedeploy("Failed")

    def timed_out(target: str, event: dict[str, Any]) -> dict[str, Any]:
        message = "Task timed out after 30.00 seconds"
        return {
            "FunctionError": "Unhandled",
            "Payload": {"errorType": "Sandbox.Timedout", "errorMessage": message},
        }

    env = {"MODEL_DIR": str(tiny_model), "TARGET_FUNCTION": VERSION}
    result = pre_traffic.run(HOOK_EVENT, timed_out, client, env)
    stub.assert_no_pending_responses()
    assert "Sandbox.Timedout" in result["reason"]


def test_the_hook_loads_no_model(tmp_path: Path) -> None:
    """Importing the hook's module stays small: no onnxruntime, numpy or tokenizers."""
    import subprocess
    import sys

    script = (
        "import sys, handler.pre_traffic; "
        "heavy = ('onnxruntime', 'numpy', 'tokenizers', 'fastapi'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

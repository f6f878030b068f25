"""scripts/smoke.py, the deploy workflow's smoke request: what it signs and what it accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

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


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALIAS = "arn:aws:lambda:us-east-1:123456789012:function:stack-api:live"


def _lambda_stub(executed: str, pointed: str, weights: dict[str, float] | None = None) -> Any:
    import io
    import json

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client("lambda", region_name="us-east-1")
    stub = Stubber(client)
    body = json.dumps({"statusCode": 200, "body": '[{"label": "POSITIVE", "score": 0.99}]'})
    stub.add_response(
        "invoke",
        {
            "StatusCode": 200,
            "ExecutedVersion": executed,
            "Payload": StreamingBody(io.BytesIO(body.encode()), len(body)),
        },
    )
    alias: dict[str, Any] = {"Name": "live", "FunctionVersion": pointed}
    if weights:
        alias["RoutingConfig"] = {"AdditionalVersionWeights": weights}
    stub.add_response(
        "get_alias", alias, {"FunctionName": ALIAS.rpartition(":")[0], "Name": "live"}
    )
    stub.activate()
    return client


def test_the_smoke_through_the_alias_names_the_version_it_ran() -> None:
    smoke = _smoke()
    answer, problem = smoke.through_alias(_lambda_stub("7", "7"), ALIAS, "fine")
    assert problem is None and smoke.check(answer) is None
    # During a canary the alias routes to two versions: either is right.
    _, problem = smoke.through_alias(_lambda_stub("8", "7", {"8": 0.1}), ALIAS, "fine")
    assert problem is None
    _, problem = smoke.through_alias(_lambda_stub("6", "7"), ALIAS, "fine")
    assert problem is not None and "ran version 6" in problem


def _codedeploy(statuses: list[str], info: dict[str, Any] | None = None) -> Any:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("codedeploy", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response(
        "list_deployments",
        {"deployments": ["d-NEW", "d-OLD"]},
        {"applicationName": "app", "deploymentGroupName": "group"},
    )
    for status in statuses:
        stub.add_response(
            "get_deployment",
            {"deploymentInfo": {"deploymentId": "d-NEW", "status": status, **(info or {})}},
            {"deploymentId": "d-NEW"},
        )
    stub.activate()
    return client


def test_waiting_for_a_release_follows_it_to_the_end() -> None:
    release = _module("wait_release")
    info = release.wait(_codedeploy(["InProgress", "Succeeded"]), "app", "group", 60, poll=0)
    ok, line = release.summary("group", info)
    assert ok and '"Succeeded"' in line


def test_a_rolled_back_release_fails_the_job_and_says_why() -> None:
    release = _module("wait_release")
    rolled = {
        "errorInformation": {"code": "ALARM_ACTIVE", "message": "ApiAliasErrorsAlarm fired"},
        "rollbackInfo": {"rollbackDeploymentId": "d-BACK", "rollbackMessage": "rolled back"},
    }
    info = release.wait(_codedeploy(["Stopped"], rolled), "app", "group", 60, poll=0)
    ok, line = release.summary("group", info)
    assert not ok
    assert "ALARM_ACTIVE: ApiAliasErrorsAlarm fired" in line and "d-BACK" in line


def test_the_deploy_workflow_waits_for_the_release_and_smokes_the_alias() -> None:
    workflow = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "scripts/wait_release.py" in workflow
    assert "--alias" in workflow and "ApiAliasArn" in workflow
    assert "ExpectedManifestSha256=" in workflow

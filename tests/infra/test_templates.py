"""infra/*.yaml: cfn-lint clean, transformed by the SAM translator, least privilege."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.batch.formats import SUFFIXES, detect
from tests.infra import sam

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [ROOT / "infra" / "template.yaml", ROOT / "infra" / "template-zip.yaml"]


@pytest.mark.parametrize(
    "template", [*TEMPLATES, ROOT / "infra" / "deploy-role.yaml"], ids=lambda p: p.name
)
def test_cfn_lint_is_clean(template: Path) -> None:
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    out = subprocess.run([exe, str(template)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _transform(template: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return sam.transform(yaml_parse(template.read_text()))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_sam_translator_transforms_it(template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(template, monkeypatch)
    types = {r["Type"] for r in out["Resources"].values()}
    assert "AWS::Lambda::Function" in types and "AWS::ApiGatewayV2::Api" in types
    assert not any(t.startswith("AWS::Serverless::") for t in types)


def _s3_filter_admits(rule: dict[str, Any], key: str) -> bool:
    """Whether a LambdaConfiguration's S3Key filter passes `key`: prefix and suffix compared
    case-sensitively, as S3 compares them."""
    checks = {
        r["Name"].lower(): r["Value"]
        for r in rule.get("Filter", {}).get("S3Key", {}).get("Rules", [])
    }
    return key.startswith(checks.get("prefix", "")) and key.endswith(checks.get("suffix", ""))


def test_image_template_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(TEMPLATES[0], monkeypatch)
    res = out["Resources"]
    batch = res["BatchFunction"]["Properties"]
    assert batch["PackageType"] == "Image" and batch["ImageConfig"]["Command"] == [
        "handler.lambda_handler"
    ]
    env = batch["Environment"]["Variables"]
    assert env["OUTPUT_BUCKET"] == {"Ref": "OutputBucket"} and env["OUTPUT_PREFIX"]
    # The notification, on the input bucket only: every key the function reads, in any case,
    # reaches it (S3's filters compare case-sensitively, as `_s3_filter_admits` does).
    rules = res["InputBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    for suffix in SUFFIXES:
        for key in (f"in/a{suffix}", f"in/A{suffix.upper()}", f"in/b{suffix.title()}"):
            assert detect(key), key  # the function reads it (case-insensitively)
            assert any(_s3_filter_admits(r, key) for r in rules), f"{key} never arrives"
    assert "NotificationConfiguration" not in res["OutputBucket"]["Properties"]
    for bucket in ("InputBucket", "OutputBucket"):
        props = res[bucket]["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert all(props["PublicAccessBlockConfiguration"].values())
    # Async failures after retries land in the on-failure destination.
    invoke = res["BatchFunctionEventInvokeConfig"]["Properties"]
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["BatchFailureQueue", "Arn"]
    }
    assert batch["ReservedConcurrentExecutions"] == {"Ref": "BatchReservedConcurrency"}
    for group in ("ApiLogGroup", "BatchLogGroup"):
        assert res[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert {
        "ApiUrl",
        "InputBucketName",
        "OutputBucketName",
        "ApiFunctionName",
        "BatchFunctionName",
    } <= set(out["Outputs"])


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_the_http_api_stage_writes_a_json_access_log_with_retention(
    template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _transform(template, monkeypatch)["Resources"]
    settings = res["HttpApiStage"]["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    fields = json.loads(settings["Format"])  # one JSON object per request
    for name in ("requestId", "status", "latencyMs", "integrationError", "routeKey"):
        assert name in fields, name
    group = res["HttpApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_both_buckets_refuse_requests_not_over_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    res = _transform(TEMPLATES[0], monkeypatch)["Resources"]
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in res.values()
        if p["Type"] == "AWS::S3::BucketPolicy"
    }
    assert set(policies) == {"InputBucket", "OutputBucket"}
    for bucket, statements in policies.items():
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert len(deny) == 1 and deny[0]["Action"] == "s3:*" and deny[0]["Principal"] == "*"
        assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, bucket
        assert {"Fn::GetAtt": [bucket, "Arn"]} in deny[0]["Resource"]


def _role_statements(out: dict[str, Any], role: str) -> list[dict[str, Any]]:
    props = out["Resources"][role]["Properties"]
    return [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


def test_iam_is_least_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(TEMPLATES[0], monkeypatch)
    roles = [n for n, r in out["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    text = json.dumps([_role_statements(out, r) for r in roles])
    assert '"s3:*"' not in text and '"states:*"' not in text and '"*"' not in text
    assert not re.search(r'"Resource": "\*"', text)
    batch = _role_statements(out, "BatchFunctionRole")
    # No self-invocation any more: big objects go to the state machine, by its name only.
    assert _actions(batch) <= {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "states:StartExecution",
        "states:DescribeExecution",
        "sqs:SendMessage",  # the on-failure destination
    }
    for statement in batch:
        if any(a.startswith("states:") for a in _actions([statement])):
            assert "${AWS::StackName}-shards" in json.dumps(statement["Resource"])
    machine = _role_statements(out, "ShardsStateMachineRole")
    assert _actions(machine) == {
        "lambda:InvokeFunction",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListMultipartUploadParts",
        "s3:AbortMultipartUpload",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
    }
    for statement in machine:
        resource = json.dumps(statement["Resource"])
        if "lambda:InvokeFunction" in _actions([statement]):  # the alias, never $LATEST
            assert statement["Resource"] == {"Ref": "BatchFunctionAliaslive"}
        elif any(a.startswith("s3:") for a in _actions([statement])):
            assert "${OutputBucket.Arn}/_work/*" in resource  # work files only, not outputs
        else:
            assert "${AWS::StackName}-shards" in resource
    api_role = out["Resources"]["ApiFunctionRole"]["Properties"]
    assert "Policies" not in api_role or not any(
        "s3:" in json.dumps(p) or "states:" in json.dumps(p) for p in api_role["Policies"]
    )


def test_failed_executions_reach_the_failure_queue_and_an_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _transform(TEMPLATES[0], monkeypatch)
    res = out["Resources"]
    rule = res["ShardsFailedRule"]["Properties"]
    assert rule["EventPattern"]["detail"]["status"] == ["FAILED", "TIMED_OUT", "ABORTED"]
    assert rule["EventPattern"]["detail"]["stateMachineArn"] == [{"Ref": "ShardsStateMachine"}]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["BatchFailureQueue", "Arn"]}
    policy = res["BatchFailureQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Principal"] == {"Service": "events.amazonaws.com"}
    assert policy["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::GetAtt": ["ShardsFailedRule", "Arn"]
    }
    alarm = json.dumps(res["ShardsExecutionsFailedAlarm"]["Properties"])
    assert "ExecutionsFailed" in alarm and "ExecutionsTimedOut" in alarm


def test_the_state_machine_definition_is_the_one_the_tests_execute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The template's state machine is infra/statemachine/shards.asl.json (what the distributed
    tests run in moto), every placeholder in it is substituted, and it calls the batch function,
    whose environment points back at it by name."""
    from samtranslator.yaml_helper import yaml_parse

    doc = yaml_parse(TEMPLATES[0].read_text())
    props = doc["Resources"]["ShardsStateMachine"]["Properties"]
    asl = (TEMPLATES[0].parent / props["DefinitionUri"]).read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", asl))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert props["DefinitionSubstitutions"]["BatchFunctionArn"] == {"Ref": "BatchFunction.Alias"}
    name = props["Name"]["Fn::Sub"]
    env = doc["Resources"]["BatchFunction"]["Properties"]["Environment"]["Variables"]
    assert env["STATE_MACHINE_ARN"]["Fn::Sub"].endswith(f":stateMachine:{name}")
    assert props["DefinitionSubstitutions"]["WorkPrefix"] == env["WORK_PREFIX"]
    out = _transform(TEMPLATES[0], monkeypatch)
    assert out["Resources"]["ShardsStateMachine"]["Type"] == "AWS::StepFunctions::StateMachine"


def test_zip_template_uses_the_layer_and_snapstart(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(TEMPLATES[1], monkeypatch)
    fn = next(r for r in out["Resources"].values() if r["Type"] == "AWS::Lambda::Function")[
        "Properties"
    ]
    assert fn["Runtime"] == "python3.12" and fn["Handler"] == "handler.lambda_handler"
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert len(fn["Layers"]) == 1


def test_dockerfile_is_lambda_python312_runtime_only() -> None:
    text = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.12\b", text, re.M)
    assert 'CMD ["handler.lambda_handler"]' in text
    installs = re.findall(r"pip install[^&]*", text)
    assert installs and all("torch" not in i and "transformers" not in i for i in installs)
    assert "COPY build/model/" in text
    reqs = (ROOT / "layers" / "requirements.txt").read_text() + (
        ROOT / "layers" / "requirements-nodeps.txt"
    ).read_text()
    pinned = [ln for ln in reqs.splitlines() if ln and not ln.startswith("#")]
    assert all("==" in ln for ln in pinned)
    assert not any(
        ln.split("==")[0] in {"torch", "transformers", "onnx", "huggingface-hub"} for ln in pinned
    )

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

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [ROOT / "infra" / "template.yaml", ROOT / "infra" / "template-zip.yaml"]
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/text-classifier:python3.12-v1"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_is_clean(template: Path) -> None:
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    out = subprocess.run([exe, str(template)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _transform(template: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    doc = yaml_parse(template.read_text())
    for resource in doc["Resources"].values():
        props = resource.get("Properties", {})
        # What `sam build` / `sam package` fill in: the pushed image, the uploaded zips.
        if resource["Type"] == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
            props["ImageUri"] = IMAGE_URI
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = {"Bucket": "artifacts", "Key": Path(props[key]).name + ".zip"}

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    out: dict[str, Any] = transform(doc, {}, NoManagedPolicies())
    return out


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_sam_translator_transforms_it(template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(template, monkeypatch)
    types = {r["Type"] for r in out["Resources"].values()}
    assert "AWS::Lambda::Function" in types and "AWS::ApiGatewayV2::Api" in types
    assert not any(t.startswith("AWS::Serverless::") for t in types)


def test_image_template_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(TEMPLATES[0], monkeypatch)
    res = out["Resources"]
    batch = res["BatchFunction"]["Properties"]
    assert batch["PackageType"] == "Image" and batch["ImageConfig"]["Command"] == [
        "handler.lambda_handler"
    ]
    env = batch["Environment"]["Variables"]
    assert env["OUTPUT_BUCKET"] == {"Ref": "OutputBucket"} and env["OUTPUT_PREFIX"]
    # The notification: one rule per supported suffix, on the input bucket only.
    rules = res["InputBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    suffixes = sorted(r["Filter"]["S3Key"]["Rules"][0]["Value"] for r in rules)
    assert suffixes == sorted([".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".txt", ".txt.gz"])
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


def test_iam_is_least_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _transform(TEMPLATES[0], monkeypatch)
    statements = [
        s
        for name, r in out["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
        for p in r["Properties"].get("Policies", [])
        for s in p["PolicyDocument"]["Statement"]
    ]
    text = json.dumps(statements)
    assert '"s3:*"' not in text and '"*"' not in text
    assert not re.search(r'"Resource": "\*"', text)
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions <= {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "lambda:InvokeFunction",
        "sqs:SendMessage",
    }
    api_role = out["Resources"]["ApiFunctionRole"]["Properties"]
    assert "Policies" not in api_role or not any(
        "s3:" in json.dumps(p) for p in api_role["Policies"]
    )


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

"""Releases (infra/template.yaml): every function publishes versions behind a `live` alias, every
trigger and integration calls the alias (never $LATEST), and a new API version takes traffic
through CodeDeploy only after the pre-traffic check, gradually, rolled back by its alarms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra import sam

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "infra" / "template.yaml"
TEMPLATES = [IMAGE, ROOT / "infra" / "template-zip.yaml"]

# Where a resource names the function it calls: (resource type, property path).
CALLERS = {
    "AWS::Lambda::Permission": ("FunctionName",),
    "AWS::Lambda::Url": ("TargetFunctionArn",),
    "AWS::ApiGatewayV2::Integration": ("IntegrationUri",),
    "AWS::Lambda::EventSourceMapping": ("FunctionName",),
    "AWS::Lambda::EventInvokeConfig": ("FunctionName",),
}


def _doc(template: Path) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    parsed: dict[str, Any] = yaml_parse(template.read_text())
    return parsed


@pytest.fixture(scope="module", params=TEMPLATES, ids=lambda p: p.name)
def translated(request: pytest.FixtureRequest) -> dict[str, Any]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        return sam.transform(_doc(request.param))
    finally:
        mp.undo()


def _aliases(res: dict[str, Any]) -> set[str]:
    return {name for name, r in res.items() if r["Type"] == "AWS::Lambda::Alias"}


def _functions(res: dict[str, Any]) -> set[str]:
    return {name for name, r in res.items() if r["Type"] == "AWS::Lambda::Function"}


def _points_at_an_alias(value: Any, aliases: set[str]) -> bool:
    text = json.dumps(value)
    return any(f'"Ref": "{a}"' in text for a in aliases) or ':live"' in text


def test_every_function_has_a_live_alias(translated: dict[str, Any]) -> None:
    res = translated["Resources"]
    aliased = {r["Properties"]["FunctionName"]["Ref"] for n, r in res.items() if n in _aliases(res)}
    assert aliased == _functions(res)
    for name in _aliases(res):
        assert res[name]["Properties"]["Name"] == "live"


def test_every_trigger_and_integration_calls_the_alias(translated: dict[str, Any]) -> None:
    res = translated["Resources"]
    aliases, functions = _aliases(res), _functions(res)
    checked = 0
    for name, r in res.items():
        path = CALLERS.get(r["Type"])
        if path is None:
            continue
        value = r["Properties"]
        for key in path:
            value = value[key]
        if r["Type"] == "AWS::Lambda::EventInvokeConfig":  # configures the alias it names
            assert r["Properties"].get("Qualifier") == "live", name
            continue
        assert _points_at_an_alias(value, aliases), f"{name} calls {value}"
        checked += 1
    for bucket in (r for r in res.values() if r["Type"] == "AWS::S3::Bucket"):
        config = bucket["Properties"].get("NotificationConfiguration", {})
        for rule in config.get("LambdaConfigurations", []):
            assert _points_at_an_alias(rule["Function"], aliases), rule
            checked += 1
    for machine in (r for r in res.values() if r["Type"] == "AWS::StepFunctions::StateMachine"):
        for key, value in machine["Properties"].get("DefinitionSubstitutions", {}).items():
            if any(f'"{f}"' in json.dumps(value) for f in functions):
                assert _points_at_an_alias(value, aliases), (key, value)
                checked += 1
    assert checked >= 2  # at least the API's integration and its permission


def test_a_new_api_version_takes_traffic_through_the_check_and_gradually() -> None:
    doc = _doc(IMAGE)
    param = doc["Parameters"]["DeploymentType"]
    assert set(param["AllowedValues"]) == {
        "AllAtOnce",
        "Canary10Percent5Minutes",
        "Linear10PercentEvery1Minute",
    }
    assert param["Default"] == "Canary10Percent5Minutes"  # production's default: a canary
    api = doc["Resources"]["ApiFunction"]["Properties"]["DeploymentPreference"]
    assert api["Type"] == {"Ref": "DeploymentType"}
    assert api["Hooks"]["PreTraffic"] == {"Ref": "PreTrafficCheckFunction"}
    alarms = {a["Ref"] for a in api["Alarms"]}
    metrics = {doc["Resources"][a]["Properties"].get("MetricName", "5xx rate") for a in alarms}
    assert {"Errors", "Throttles", "Duration"} <= metrics  # errors, throttles, p99 latency
    for alarm in alarms - {"Api5xxRateAlarm"}:  # the new version behind the alias
        dims = {d["Name"] for d in doc["Resources"][alarm]["Properties"]["Dimensions"]}
        assert "Resource" in dims, alarm
    batch = doc["Resources"]["BatchFunction"]["Properties"]["DeploymentPreference"]
    assert batch["Type"] == {"Ref": "DeploymentType"} and batch["Alarms"]
    # CodeDeploy's role is the stack's own, under the permissions boundary.
    role = doc["Resources"]["ReleaseRole"]["Properties"]
    assert api["Role"] == batch["Role"] == {"Fn::GetAtt": ["ReleaseRole", "Arn"]}
    assert "PermissionsBoundary" in role


def test_the_pre_traffic_check_is_the_hook_module_on_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = _doc(IMAGE)
    hook = doc["Resources"]["PreTrafficCheckFunction"]["Properties"]
    assert hook["ImageConfig"]["Command"] == ["handler.pre_traffic.lambda_handler"]
    # CodeDeploy's managed role may invoke only functions named so.
    assert hook["FunctionName"]["Fn::Sub"].startswith("CodeDeployHook_")
    assert hook["Environment"]["Variables"]["TARGET_FUNCTION"] == {"Ref": "ApiFunction.Version"}
    statements = hook["Policies"][0]["Statement"]
    invoke = next(s for s in statements if s["Action"] == "lambda:InvokeFunction")
    assert invoke["Resource"] == {"Ref": "ApiFunction.Version"}  # that version, nothing else
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = sam.transform(doc)
    update = out["Resources"]["ApiFunctionAliaslive"]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": "PreTrafficCheckFunction"}


def test_provisioned_concurrency_and_tracing_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc(IMAGE)
    params = doc["Parameters"]
    assert params["ApiProvisionedConcurrency"]["Default"] == 0
    assert params["EnableTracing"]["Default"] == "false"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    res = sam.transform(doc)["Resources"]
    provisioned = res["ApiFunctionAliaslive"]["Properties"]["ProvisionedConcurrencyConfig"]
    assert provisioned["Fn::If"][0] == "HasProvisionedConcurrency"  # on the alias, 0 = none
    for name in ("ApiFunction", "BatchFunction"):
        tracing = res[name]["Properties"]["TracingConfig"]["Mode"]
        assert tracing == {"Fn::If": ["UseTracing", "Active", "PassThrough"]}
        env = res[name]["Properties"]["Environment"]["Variables"]
        assert env["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["UseTracing", "false", "true"]}

"""The public endpoint's guards (auth, throttling, reserved concurrency, CORS, alarms) in
infra/template.yaml: for every auth mode, cfn-lint is clean, the SAM translator transforms it,
and each guard is present in the transformed template once its conditions are resolved for
that mode's parameter values."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import sam
from tests.infra.test_templates import ROOT

TEMPLATE = ROOT / "infra" / "template.yaml"
MODES: dict[str, dict[str, Any]] = {
    "IAM": {"ApiAuth": "IAM"},
    "JWT": {
        "ApiAuth": "JWT",
        "JwtIssuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example",
        "JwtAudience": "client-one,client-two",
    },
    "NONE": {"ApiAuth": "NONE"},
}


def with_defaults(values: dict[str, Any]) -> str:
    """The template text with parameter defaults set: how `sam deploy` would pass them.
    (Parsed by the SAM translator's YAML reader, which turns !Ref and friends into their long
    forms; written back in those, which CloudFormation and cfn-lint read alike.)"""
    from samtranslator.yaml_helper import yaml_parse

    doc = yaml_parse(TEMPLATE.read_text())
    for name, value in values.items():
        doc["Parameters"][name]["Default"] = value
    text: str = yaml.safe_dump(doc, sort_keys=False)
    return text


def _transform(text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return sam.transform(yaml_parse(text))


def resolve(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Conditions evaluated for these parameter values (defaults otherwise): resources and
    outputs whose condition is false dropped, Fn::If chosen, AWS::NoValue removed."""
    params = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
    params.update(values)
    for name, spec in template.get("Parameters", {}).items():
        if spec.get("Type") == "CommaDelimitedList" and isinstance(params[name], str):
            params[name] = params[name].split(",") if params[name] else [""]
    conditions: dict[str, bool] = {}

    def value(x: Any) -> Any:
        if isinstance(x, dict) and len(x) == 1:
            ((k, v),) = x.items()
            if k == "Ref":
                return params.get(v, v)
            if k == "Fn::Join":
                return v[0].join(str(value(i)) for i in value(v[1]))
        return x

    def cond(x: Any) -> bool:
        ((k, v),) = x.items()
        if k == "Fn::Equals":
            return str(value(v[0])) == str(value(v[1]))
        if k == "Fn::Not":
            return not cond(v[0])
        if k == "Fn::And":
            return all(cond(i) for i in v)
        if k == "Fn::Or":
            return any(cond(i) for i in v)
        if k == "Condition":
            return conditions[v]
        raise AssertionError(f"condition {k} not handled")

    for name, spec in template.get("Conditions", {}).items():
        conditions[name] = cond(spec)
    no_value = object()

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"Fn::If"}:
                name, yes, no = x["Fn::If"]
                return walk(yes if conditions[name] else no)
            if x == {"Ref": "AWS::NoValue"}:
                return no_value
            out = {k: walk(v) for k, v in x.items()}
            return {k: v for k, v in out.items() if v is not no_value}
        if isinstance(x, list):
            return [i for i in (walk(v) for v in x) if i is not no_value]
        return x

    resolved = copy.deepcopy(template)
    for section in ("Resources", "Outputs"):
        resolved[section] = {
            k: walk(v)
            for k, v in template.get(section, {}).items()
            if "Condition" not in v or conditions[v["Condition"]]
        }
    resolved["_conditions"] = conditions
    resolved["_params"] = params
    return resolved


@pytest.mark.parametrize("mode", MODES)
def test_cfn_lint_is_clean_for_every_auth_mode(mode: str, tmp_path: Path) -> None:
    path = tmp_path / f"template-{mode}.yaml"
    path.write_text(with_defaults(MODES[mode]))
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _routes(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in res.values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }


@pytest.mark.parametrize("mode", MODES)
def test_every_guard_is_in_the_transformed_template(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = resolve(_transform(with_defaults(MODES[mode]), monkeypatch), MODES[mode])
    res = out["Resources"]
    # Auth: every route, the mode asked for; JWT with its issuer and audiences.
    routes = _routes(res)
    assert set(routes) == {"POST /{proxy+}", "GET /{proxy+}", "POST /"}
    expected = {"IAM": "AWS_IAM", "JWT": "JWT", "NONE": "NONE"}[mode]
    assert {r["AuthorizationType"] for r in routes.values()} == {expected}
    authorizers = [r for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Authorizer"]
    if mode == "JWT":
        assert len(authorizers) == 1
        jwt = authorizers[0]["Properties"]["JwtConfiguration"]
        assert jwt["Issuer"] == {"Ref": "JwtIssuer"} and jwt["Audience"] == {"Ref": "JwtAudience"}
        assert all(r["AuthorizerId"] == {"Ref": "HttpApiJwtAuthorizer"} for r in routes.values())
    else:
        assert authorizers == [] and all("AuthorizerId" not in r for r in routes.values())
    # No SAM-made API without these guards beside ours.
    apis = [k for k, r in res.items() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    assert apis == ["HttpApi"]
    # Throttling on the stage.
    stages = [r["Properties"] for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    assert len(stages) == 1
    assert stages[0]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }
    # Alarms: 5xx rate, p99 latency, errors and throttles of both functions, failure queue.
    alarms = {k: r["Properties"] for k, r in res.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = set()
    for props in alarms.values():
        if "MetricName" in props:
            metrics.add((props["Namespace"], props["MetricName"], json_dim(props)))
        for m in props.get("Metrics", []):
            if "MetricStat" in m:
                stat = m["MetricStat"]["Metric"]
                metrics.add((stat["Namespace"], stat["MetricName"], json_dim(stat)))
    assert {
        ("AWS/ApiGateway", "5xx", "ApiId"),
        ("AWS/ApiGateway", "Count", "ApiId"),
        ("AWS/ApiGateway", "Latency", "ApiId"),
        ("AWS/Lambda", "Errors", "ApiFunction"),
        ("AWS/Lambda", "Throttles", "ApiFunction"),
        ("AWS/Lambda", "Errors", "BatchFunction"),
        ("AWS/Lambda", "Throttles", "BatchFunction"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "BatchFailureQueue"),
    } <= metrics
    latency = next(p for p in alarms.values() if p.get("MetricName") == "Latency")
    assert latency["ExtendedStatistic"] == "p99"
    assert latency["Threshold"] == {"Ref": "ApiLatencyP99Ms"}
    # Defaults: no email, so no topic and no actions; no CORS; no reserved concurrency.
    assert "AlarmTopic" not in res and all("AlarmActions" not in p for p in alarms.values())
    assert "CorsConfiguration" not in res["HttpApi"]["Properties"]
    assert "ReservedConcurrentExecutions" not in res["ApiFunction"]["Properties"]
    # The Function URL answers signed requests only, whatever the API's mode.
    url = next(r for r in res.values() if r["Type"] == "AWS::Lambda::Url")
    assert url["Properties"]["AuthType"] == "AWS_IAM"


def json_dim(props: dict[str, Any]) -> str:
    dims = props.get("Dimensions", [])
    value = dims[0]["Value"] if dims else {}
    if isinstance(value, dict):
        ref = value.get("Ref") or value.get("Fn::GetAtt", [""])[0]
        return "ApiId" if ref == "HttpApi" else str(ref)
    return str(value)


def test_optional_guards_appear_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "ApiAuth": "IAM",
        "AlarmEmail": "ops@example.com",
        "CorsAllowedOrigins": "https://app.example.com,https://admin.example.com",
        "ApiReservedConcurrency": 20,
    }
    out = resolve(_transform(with_defaults(values), monkeypatch), values)
    res = out["Resources"]
    topic = res["AlarmTopic"]["Properties"]
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}]
    alarms = [r["Properties"] for r in res.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) >= 7
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)
    cors = res["HttpApi"]["Properties"]["CorsConfiguration"]
    assert cors["AllowOrigins"] == {"Ref": "CorsAllowedOrigins"}
    assert "OPTIONS" not in cors["AllowMethods"]
    # What the app says in headers, a browser may read: truncated inputs, windows per text.
    assert set(cors["ExposeHeaders"]) == {"x-truncated-inputs", "x-long-text-windows"}
    reserved = res["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Ref": "ApiReservedConcurrency"}
    assert out["_conditions"]["HasCors"] and out["_conditions"]["HasAlarmEmail"]
    assert "AlarmTopicArn" in out["Outputs"]

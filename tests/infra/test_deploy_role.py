"""infra/deploy-role.yaml cannot be used to mint a role more privileged than the application
needs: every role the CloudFormation execution role creates or changes carries the boundary, the
boundary can be neither removed nor edited, and its Lambda actions reach only the stack's own
functions. Judged by IAM's evaluation rules (explicit deny, then allow; wildcards; the condition
operators used), applied to the policies as written, with the template's values substituted."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra import sam

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, STACK, PARTITION, REGION = "123456789012", "text-classifier", "aws", "us-east-1"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-role-boundary"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
REPO = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{STACK}"


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def function(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def _resolve(node: Any) -> Any:
    """The template's intrinsics for the values of one deployment of it."""
    if isinstance(node, list):
        return [_resolve(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "Fn::Sub" in node:
        values = {
            "StackName": STACK,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::Region": REGION,
            "AWS::StackName": f"{STACK}-deploy",
            "ArtifactsBucket.Arn": "arn:aws:s3:::artifacts",
            "GitHubRepository": "owner/repo",
        }
        return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], node["Fn::Sub"])
    if node == {"Ref": "ApplicationRoleBoundary"}:
        return BOUNDARY
    if node == {"Ref": "AWS::AccountId"}:
        return ACCOUNT
    if node == {"Fn::GetAtt": ["ImageRepository", "Arn"]}:
        return REPO
    return {k: _resolve(v) for k, v in node.items()}


@pytest.fixture(scope="module")
def bootstrap() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    doc = yaml_parse((ROOT / "infra" / "deploy-role.yaml").read_text())
    return _resolve(doc["Resources"])  # type: ignore[no-any-return]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            got, wanted = context.get(key), [str(w) for w in _listed(wanted)]
            if operator == "StringEquals":
                ok = got is not None and got in wanted
            elif operator == "StringNotEquals":  # true when the key is absent, as in IAM
                ok = got is None or got not in wanted
            elif operator == "StringLike":
                ok = got is not None and any(fnmatch.fnmatchcase(got, w) for w in wanted)
            elif operator == "Bool":
                ok = got is not None and got.lower() in [w.lower() for w in wanted]
            else:
                raise AssertionError(f"operator {operator} not modelled here")
            if not ok:
                return False
    return True


def _matches(
    statement: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> bool:
    actions = [a.lower() for a in _listed(statement["Action"])]
    return (
        any(fnmatch.fnmatchcase(action.lower(), a) for a in actions)
        and any(fnmatch.fnmatchcase(resource, r) for r in _listed(statement["Resource"]))
        and _condition_holds(statement.get("Condition", {}), context)
    )


def decide(statements: list[dict[str, Any]], action: str, resource: str, **context: str) -> str:
    """'deny' (an explicit Deny matches), 'allow', or 'implicit' (nothing allows it)."""
    ctx = {k.replace("__", ":"): v for k, v in context.items()}
    hits = [s["Effect"] for s in statements if _matches(s, action, resource, ctx)]
    return "deny" if "Deny" in hits else "allow" if "Allow" in hits else "implicit"


def statements_of(resource: dict[str, Any]) -> list[dict[str, Any]]:
    props = resource["Properties"]
    if resource["Type"] == "AWS::IAM::ManagedPolicy":
        return list(props["PolicyDocument"]["Statement"])
    return [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]


@pytest.fixture(scope="module")
def execution(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return statements_of(bootstrap["CloudFormationExecutionRole"])


@pytest.fixture(scope="module")
def boundary(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return statements_of(bootstrap["ApplicationRoleBoundary"])


def test_a_role_is_created_only_with_the_boundary(execution: list[dict[str, Any]]) -> None:
    new = role(f"{STACK}-ApiFunctionRole-AB12CD")
    assert decide(execution, "iam:CreateRole", new, iam__PermissionsBoundary=BOUNDARY) == "allow"
    assert decide(execution, "iam:CreateRole", new) == "deny"
    assert decide(execution, "iam:CreateRole", new, iam__PermissionsBoundary=ADMIN) == "deny"


@pytest.mark.parametrize(
    "action", ["iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DeleteRolePolicy"]
)
def test_policies_change_only_on_roles_that_carry_the_boundary(
    execution: list[dict[str, Any]], action: str
) -> None:
    mine = role(f"{STACK}-BatchFunctionRole-XYZ")
    assert decide(execution, action, mine, iam__PermissionsBoundary=BOUNDARY) == "allow"
    assert decide(execution, action, mine) != "allow"  # a role of the stack without it


def test_the_boundary_can_be_neither_removed_replaced_nor_edited(
    execution: list[dict[str, Any]],
) -> None:
    mine = role(f"{STACK}-ApiFunctionRole-AB12CD")
    assert decide(execution, "iam:DeleteRolePermissionsBoundary", mine) == "deny"
    replaced = decide(
        execution, "iam:PutRolePermissionsBoundary", mine, iam__PermissionsBoundary=ADMIN
    )
    assert replaced == "deny"
    for action in ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy"):
        assert decide(execution, action, BOUNDARY) == "deny", action


def test_the_deploy_roles_cannot_edit_themselves(bootstrap: dict[str, Any]) -> None:
    """Roles named <StackName>-* are the stack's; the bootstrap's own roles (even when its stack
    is named <StackName>-deploy) are named outside that pattern."""
    execution = statements_of(bootstrap["CloudFormationExecutionRole"])
    for logical in ("CloudFormationExecutionRole", "GitHubDeployRole"):
        name = bootstrap[logical]["Properties"]["RoleName"]
        assert not name.startswith(f"{STACK}-"), name
        for action in ("iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy"):
            assert decide(execution, action, role(name), iam__PermissionsBoundary=BOUNDARY) != (
                "allow"
            ), (name, action)


def test_lambda_actions_reach_only_the_stacks_functions(execution: list[dict[str, Any]]) -> None:
    for action in ("lambda:CreateFunction", "lambda:UpdateFunctionCode", "lambda:AddPermission"):
        assert decide(execution, action, function(f"{STACK}-api")) == "allow", action
        assert decide(execution, action, function(f"{STACK}-batch:live")) == "allow", action
        assert decide(execution, action, function("payroll")) == "implicit", action
        assert decide(execution, action, function("text-classifierX")) == "implicit", action
    layer = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{STACK}-runtime:3"
    assert decide(execution, "lambda:PublishLayerVersion", layer) == "allow"
    assert not any("lambda:*" in _listed(s["Action"]) and s["Resource"] == "*" for s in execution)


def test_roles_are_passed_only_to_the_stacks_services(execution: list[dict[str, Any]]) -> None:
    mine = role(f"{STACK}-ApiFunctionRole-AB12CD")
    ok = decide(execution, "iam:PassRole", mine, iam__PassedToService="lambda.amazonaws.com")
    assert ok == "allow"
    assert decide(execution, "iam:PassRole", mine, iam__PassedToService="ec2.amazonaws.com") != (
        "allow"
    )


def test_a_role_under_the_boundary_can_do_nothing_in_iam_or_sts(
    boundary: list[dict[str, Any]],
) -> None:
    for action in (
        "iam:CreateRole",
        "iam:AttachRolePolicy",
        "iam:PassRole",
        "iam:CreateAccessKey",
        "sts:AssumeRole",
        "lambda:CreateFunction",
        "lambda:UpdateFunctionCode",
    ):
        assert decide(boundary, action, "*") == "implicit", action


def _app_roles() -> list[tuple[str, dict[str, Any]]]:
    from samtranslator.yaml_helper import yaml_parse

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    roles = []
    for name in ("template.yaml", "template-zip.yaml"):
        out = sam.transform(yaml_parse((ROOT / "infra" / name).read_text()))
        roles += [
            (f"{name}:{k}", r) for k, r in out["Resources"].items() if r["Type"] == "AWS::IAM::Role"
        ]
    return roles


def test_every_role_the_application_creates_carries_the_boundary() -> None:
    roles = _app_roles()
    assert len(roles) >= 4  # the API and batch functions', the state machine's, the zip API's
    for name, r in roles:
        assert r["Properties"].get("PermissionsBoundary") == {
            "Fn::If": [
                "HasPermissionsBoundary",
                {"Ref": "PermissionsBoundaryArn"},
                {"Ref": "AWS::NoValue"},
            ]
        }, name


# Where each service's actions of the application's roles land, for a stack named STACK.
WHERE = {
    "s3": f"arn:aws:s3:::{STACK}-input-{ACCOUNT}-{REGION}/reviews.jsonl",
    "states": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{STACK}-shards:run-1",
    "lambda": function(f"{STACK}-batch"),
    "sqs": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-BatchFailureQueue-AB12",
    "logs": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{STACK}-api:*",
    # The release role reads the stack's alarms; the pre-traffic check reports to CodeDeploy.
    "cloudwatch": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{STACK}-ApiAliasErrorsAlarm-AB12",
    "codedeploy": f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:"
    f"{STACK}-ServerlessDeploymentApplication-AB12/{STACK}-ApiFunctionDeploymentGroup-CD34",
}


def test_the_boundary_admits_everything_the_applications_roles_are_granted(
    boundary: list[dict[str, Any]],
) -> None:
    """A deploy under the boundary must not break a function: every action its roles hold, on
    the stack's own resources."""
    basic = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    for name, r in _app_roles():
        props = r["Properties"]
        actions = list(basic) if props.get("ManagedPolicyArns") else []
        for policy in props.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions += _listed(statement["Action"])
        assert actions, name
        for action in actions:
            where = WHERE[action.split(":")[0]]
            got = decide(boundary, action, where, aws__ResourceAccount=ACCOUNT)
            assert got == "allow", (name, action)
        # ... and nothing of another account's buckets.
        assert decide(boundary, "s3:GetObject", WHERE["s3"], aws__ResourceAccount="999") != (
            "allow"
        )

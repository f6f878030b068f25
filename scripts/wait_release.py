"""Wait for a stack's latest CodeDeploy releases (the canary and, if an alarm fired or the
pre-traffic check failed, the rollback) and fail unless each succeeded.

    python scripts/wait_release.py STACK_NAME [--region R] [--timeout 1800]

`sam deploy` already waits while CloudFormation waits for CodeDeploy; this says what happened:
which deployment, its final status, and on a rollback the error and the alarm or hook behind it.
Exit status 0 only when every deployment group's latest deployment Succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

DONE = {"Succeeded", "Failed", "Stopped"}


def deployment_groups(cloudformation: Any, stack: str) -> list[tuple[str, str]]:
    """(application, deployment group) of each release the stack configures."""
    resources = cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    apps = [
        r["PhysicalResourceId"]
        for r in resources
        if r["ResourceType"] == "AWS::CodeDeploy::Application"
    ]
    groups = [
        r["PhysicalResourceId"]
        for r in resources
        if r["ResourceType"] == "AWS::CodeDeploy::DeploymentGroup"
    ]
    if not apps or not groups:
        raise SystemExit(f"error: stack {stack} has no CodeDeploy releases (DeploymentPreference)")
    return [(apps[0], group) for group in sorted(groups)]


def wait(
    codedeploy: Any, app: str, group: str, timeout: float, poll: float = 10.0
) -> dict[str, Any]:
    """The group's latest deployment once it is done (or as it is at the timeout)."""
    listed = codedeploy.list_deployments(applicationName=app, deploymentGroupName=group)
    if not listed.get("deployments"):
        return {"deploymentId": None, "status": "Succeeded", "note": "no deployment yet"}
    latest = listed["deployments"][0]  # newest first
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = codedeploy.get_deployment(deploymentId=latest)["deploymentInfo"]
        if info["status"] in DONE or time.monotonic() >= deadline:
            return info
        time.sleep(poll)


def summary(group: str, info: dict[str, Any]) -> tuple[bool, str]:
    ok = info.get("status") == "Succeeded"
    line = {"group": group, "deployment": info.get("deploymentId"), "status": info.get("status")}
    if not ok:
        error = info.get("errorInformation") or {}
        line["error"] = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        rollback = info.get("rollbackInfo") or {}
        if rollback:
            line["rolled_back_by"] = rollback.get("rollbackDeploymentId")
            line["rollback"] = rollback.get("rollbackMessage")
    return ok, json.dumps(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stack")
    ap.add_argument("--region", default=None)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per deployment group")
    args = ap.parse_args(argv)
    import boto3

    session = boto3.Session(region_name=args.region)
    codedeploy = session.client("codedeploy")
    all_ok = True
    for app, group in deployment_groups(session.client("cloudformation"), args.stack):
        ok, line = summary(group, wait(codedeploy, app, group, args.timeout))
        print(line)
        all_ok = all_ok and ok
    if not all_ok:
        print("error: a release did not succeed; CodeDeploy moved its alias back", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CodeDeploy's PreTraffic hook: a new version takes traffic only after it answers right where
it runs.

CodeDeploy calls this function (its own small function, the same image with this module as its
command) before it shifts any traffic to the version it deploys. The check invokes that version
(TARGET_FUNCTION: the version's ARN, `!Ref ApiFunction.Version`) as API Gateway would:

1. `GET /health` must answer 200 with the manifest digest of the artifact this image carries
   (or EXPECTED_MANIFEST_SHA256, when the deploy pins one): the version loaded, and loaded the
   model that was built and verified;
2. `POST /classify` with the texts the build recorded (manifest.json `recorded_answers`) must
   give each recorded label first and every label's score within the recorded tolerance, on
   Lambda's own CPU.

It reports `Succeeded` or `Failed` to CodeDeploy, with the reason in its log and its result; a
failed check (or any error: the model missing, the function timing out, a throttle) means the
version never takes traffic and CodeDeploy rolls the alias back. The model is never loaded
here: the hook imports boto3 and the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handler.manifest import MANIFEST  # the standard library only

if TYPE_CHECKING:
    from mangum.types import LambdaContext

SUCCEEDED, FAILED = "Succeeded", "Failed"

Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


class CheckFailed(Exception):
    """The version is not the one to take traffic; the message says why."""


def http_event(method: str, path: str, body: Any = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as the API sends the version."""
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "pre-traffic.check"},
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
            },
            "requestId": "pre-traffic",
            "routeKey": f"{method} {path}",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def _answer(invoke: Invoke, target: str, event: dict[str, Any], what: str) -> Any:
    response = invoke(target, event)
    if response.get("FunctionError"):
        raise CheckFailed(f"{what}: the version failed ({response.get('Payload')!r:.500})")
    payload = response.get("Payload")
    if not isinstance(payload, dict) or payload.get("statusCode") != 200:
        status = payload.get("statusCode") if isinstance(payload, dict) else None
        raise CheckFailed(f"{what}: status {status}, expected 200 ({payload!r:.500})")
    return json.loads(payload.get("body") or "null")


def check(invoke: Invoke, target: str, manifest: Mapping[str, Any], digest: str) -> str:
    """Raise CheckFailed naming the first difference; else a one-line summary."""
    health = _answer(invoke, target, http_event("GET", "/health"), "GET /health")
    served = health.get("manifest_sha256") if isinstance(health, dict) else None
    if served != digest:
        raise CheckFailed(f"the version serves manifest {served}, expected {digest}")
    recorded = manifest.get("recorded_answers") or {}
    texts, expected = recorded.get("texts") or [], recorded.get("answers") or []
    if not texts or len(texts) != len(expected):
        raise CheckFailed("the manifest records no answers to check (build it again)")
    tolerance = float(recorded.get("score_tolerance", 0.0))
    body = {"inputs": texts, "parameters": {"top_k": None}}
    got = _answer(invoke, target, http_event("POST", "/classify", body), "POST /classify")
    if not isinstance(got, list) or len(got) != len(expected):
        raise CheckFailed(f"POST /classify: {len(expected)} answers expected, got {got!r:.300}")
    worst = 0.0
    for i, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        first = ours[0]["label"] if ours else None
        if first != theirs[0]["label"]:
            raise CheckFailed(f"text {i}: label {first}, recorded {theirs[0]['label']}")
        scores = {a["label"]: a["score"] for a in ours}
        for want in theirs:
            off = abs(scores.get(want["label"], float("inf")) - want["score"])
            if off > tolerance:
                raise CheckFailed(
                    f"text {i}: {want['label']} scored {scores.get(want['label'])}, recorded "
                    f"{want['score']} (tolerance {tolerance})"
                )
            worst = max(worst, off)
    return (
        f"{len(texts)} recorded answers within {worst:.2g} (tolerance {tolerance}); "
        f"manifest {digest[:12]}"
    )


def _lambda_invoke(client: Any) -> Invoke:
    def invoke(target: str, event: dict[str, Any]) -> dict[str, Any]:
        response = client.invoke(FunctionName=target, Payload=json.dumps(event).encode())
        raw = response["Payload"].read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return {"FunctionError": response.get("FunctionError"), "Payload": payload}

    return invoke


def run(
    event: Mapping[str, Any], invoke: Invoke, codedeploy: Any, env: Mapping[str, str]
) -> dict[str, Any]:
    """Check the version and tell CodeDeploy; never raises past the report (a hook that fails
    without reporting leaves the deployment waiting for its timeout)."""
    status, reason = FAILED, ""
    try:
        folder = Path(env.get("MODEL_DIR", "model"))
        raw = (folder / MANIFEST).read_bytes()
        digest = env.get("EXPECTED_MANIFEST_SHA256") or hashlib.sha256(raw).hexdigest()
        target = env["TARGET_FUNCTION"]
        reason = check(invoke, target, json.loads(raw), digest)
        status = SUCCEEDED
    except CheckFailed as exc:
        reason = str(exc)
    except Exception as exc:  # the invoke timed out, was throttled, the image lacks the model...
        reason = f"{type(exc).__name__}: {exc}"
    # One JSON line in the hook's log group: what was decided and why.
    print(json.dumps({"pre_traffic_check": status, "reason": reason}), flush=True)
    codedeploy.put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status,
    )
    return {"status": status, "reason": reason}


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    # The version's own timeout bounds each invoke; no retries: a failed check is an answer.
    config = Config(read_timeout=120, retries={"max_attempts": 1})
    return run(
        event,
        _lambda_invoke(boto3.client("lambda", config=config)),
        boto3.client("codedeploy"),
        os.environ,
    )

"""The function as Lambda runs it: `python -m awslambdaric handler.lambda_handler` (the image's
CMD) against a Runtime API emulator on 127.0.0.1, on the image's Python (3.12) where the machine
has it (scripts/setup.sh makes that environment; LAMBDA_PYTHON names its interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handler.local.runtime_api import RuntimeAPI
from tests.conftest import load_event

ROOT = Path(__file__).resolve().parents[2]


def _lambda_python() -> str | None:
    named = os.environ.get("LAMBDA_PYTHON")
    candidates = [named] if named else []
    candidates += [str(ROOT / ".venv-lambda" / "bin" / "python"), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import awslambdaric"], capture_output=True, timeout=60
            )
            if probe.returncode == 0:
                return python
    return None


LAMBDA_PYTHON = _lambda_python()
pytestmark = pytest.mark.skipif(
    LAMBDA_PYTHON is None,
    reason="no interpreter with awslambdaric (scripts/setup.sh makes one; or set LAMBDA_PYTHON)",
)


@dataclass
class Runtime:
    api: RuntimeAPI
    process: subprocess.Popen[bytes]

    def invoke(self, event: Any, time_left_s: float = 900.0, timeout: float = 60.0) -> Any:
        outcome = self.api.result(self.api.submit(event, time_left_s), timeout)
        assert outcome.kind == "response", outcome
        return outcome.body


def start(model_dir: Path, **env: str) -> Runtime:
    """awslambdaric against a fresh emulator."""
    api = RuntimeAPI().start()
    assert LAMBDA_PYTHON is not None
    process = subprocess.Popen(
        [LAMBDA_PYTHON, "-m", "awslambdaric", "handler.lambda_handler"],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "LAMBDA_TASK_ROOT": str(ROOT),
            "AWS_LAMBDA_FUNCTION_NAME": "text-classifier",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "MODEL_DIR": str(model_dir),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Runtime(api, process)


@pytest.fixture
def runtime(tiny_model: Path) -> Iterator[Runtime]:
    rt = start(tiny_model)
    try:
        yield rt
    finally:
        rt.process.kill()
        rt.process.wait(timeout=10)
        rt.api.stop()


def test_http_event_gets_a_response_and_the_environment_stays_warm(runtime: Runtime) -> None:
    runtime.api.first_next(timeout=60)
    for _ in range(2):
        response = runtime.invoke(load_event("apigw-http-classify.json"))
        assert response["statusCode"] == 200
        labels = [d["label"] for d in json.loads(response["body"])]
        assert sorted(labels) == ["NEGATIVE", "POSITIVE"]
    warm = runtime.invoke({"warmup": True})
    assert warm["warm"] is True and warm["load_seconds"] > 0


def test_function_error_goes_to_the_error_route_and_the_next_call_works(
    runtime: Runtime,
) -> None:
    outcome = runtime.api.result(runtime.api.submit({"foo": 1}), timeout=60)
    assert outcome.kind == "error"
    assert outcome.body["errorType"] == "UnsupportedEvent"
    assert "unsupported event with keys [foo]" in outcome.body["errorMessage"]
    assert runtime.invoke(load_event("apigw-http-classify.json"))["statusCode"] == 200


def test_a_bad_model_dir_is_an_init_error_naming_it(tmp_path: Path) -> None:
    rt = start(tmp_path / "no-model")
    try:
        error = rt.api.init_error(timeout=60)
        assert error["errorType"] == "ArtifactError"
        assert "MODEL_DIR" in error["errorMessage"] and "no-model" in error["errorMessage"]
        assert rt.process.wait(timeout=30) != 0
        assert not rt.api.next_calls  # never asked for an event
    finally:
        rt.process.kill()
        rt.api.stop()


def test_the_deadline_header_is_the_batch_paths_time_budget(
    tiny_model: Path, moto_server: str
) -> None:
    """Lambda-Runtime-Deadline-Ms -> context.get_remaining_time_in_millis -> the job's budget.
    With 30 s left and a 60 s margin the job stops after its first chunk and hands the object to
    the state machine (a Step Functions execution on the moto server, named for the object and
    model); with 900 s left the same object completes in one invocation."""
    import boto3

    clients = {
        name: boto3.client(
            name,
            endpoint_url=moto_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "stepfunctions", "iam")
    }
    s3, sfn = clients["s3"], clients["stepfunctions"]
    for bucket in ("ric-in", "ric-out"):
        s3.create_bucket(Bucket=bucket)
    role = clients["iam"].create_role(RoleName="ric-sfn", AssumeRolePolicyDocument="{}")
    machine = sfn.create_state_machine(
        name="ric-shards",
        roleArn=role["Role"]["Arn"],
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]
    texts = "".join(("great fun\n" if i % 2 else "awful plot\n") for i in range(40))
    s3.put_object(Bucket="ric-in", Key="texts.txt", Body=texts.encode())
    etag = s3.head_object(Bucket="ric-in", Key="texts.txt")["ETag"].strip('"')
    event = load_event("s3-put.json")
    rec = event["Records"][0]["s3"]
    rec["bucket"]["name"], rec["object"]["key"], rec["object"]["eTag"] = "ric-in", "texts.txt", etag
    rt = start(
        tiny_model,
        AWS_ENDPOINT_URL_S3=moto_server,
        AWS_ENDPOINT_URL_SFN=moto_server,
        STATE_MACHINE_ARN=machine,
        INPUT_BUCKET="ric-in",
        OUTPUT_BUCKET="ric-out",
        BATCH_CHUNK_SIZE="4",
        BATCH_TIME_MARGIN_MS="60000",
    )
    try:
        handed = rt.invoke(event, time_left_s=30)["results"][0]
        assert handed["status"] == "distributed" and handed["why"] == "time"
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        assert [e["executionArn"] for e in executions] == [handed["execution"]]
        started = json.loads(sfn.describe_execution(executionArn=handed["execution"])["input"])
        assert started["job"]["source"]["etag"] == etag and started["job"]["format"] == ".txt"
        # Nothing half-written is published; the lines written so far wait in the work area,
        # named by the job the state machine continues after them.
        listed = s3.list_objects_v2(Bucket="ric-out").get("Contents", [])
        assert [o["Key"] for o in listed] == [started["job"]["resume"]["part"]]
        assert started["job"]["resume"]["records"] == handed["records_done"] == 4
        done = rt.invoke(event, time_left_s=900)["results"][0]
        assert done["status"] == "done" and done["records"] == 40 and done["mode"] == "single"
        lines = s3.get_object(Bucket="ric-out", Key="texts.txt.predictions.jsonl")["Body"]
        records = [json.loads(line)["record"] for line in lines.read().splitlines()]
        assert records == list(range(1, 41))
        assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    finally:
        rt.process.kill()
        rt.process.wait(timeout=10)
        rt.api.stop()

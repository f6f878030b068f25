"""The distributed path, end to end: the template's state machine (infra/statemachine/
shards.asl.json with the template's substitutions) executed by moto's Step Functions
interpreter, its Lambda tasks routed to the project's handler in-process (moto runs Lambda code
only under Docker), S3 in the same moto. Objects of 100,000+ records; the output must be
byte-identical to what the single-invocation path writes for the same object."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import random
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from handler.adapters.s3_store import S3Store, make_client
from handler.config import Settings
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
from handler.local.context import LocalContext
from tests.adapters.conftest import s3_event

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "infra" / "statemachine" / "shards.asl.json"
INPUT, OUTPUT = "big-input", "big-output"
WORDS = [
    "good",
    "great",
    "fun",
    "the",
    "movie",
    "plot",
    "was",
    "bad",
    "awful",
    "dull",
    "very",
    "it",
]

pytestmark = pytest.mark.slow


def definition(function_arn: str, max_concurrency: int) -> str:
    """The ASL file as CloudFormation makes it from the template's DefinitionSubstitutions."""
    substitutions = {
        "BatchFunctionArn": function_arn,
        "MaxConcurrency": str(max_concurrency),
        "WorkBucket": OUTPUT,
        "WorkPrefix": "_work/",
    }
    text = ASL.read_text()
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    return text


@dataclasses.dataclass
class Cloud:
    s3: Any
    sfn: Any
    machine: str
    distributed: LambdaFunction  # the deployed batch function: hands big objects to the machine
    single: LambdaFunction  # the same model, no state machine: the single-invocation path
    calls: list[dict[str, Any]]
    faults: dict[Any, str]  # (step, shard index) -> error to raise on its first call

    def handler(self, function: LambdaFunction) -> Any:
        return make_lambda_handler(function)

    def upload(self, key: str, body: bytes) -> dict[str, Any]:
        self.s3.put_object(Bucket=INPUT, Key=key, Body=body)
        head = self.s3.head_object(Bucket=INPUT, Key=key)
        event = s3_event(key, head["ETag"].strip('"'), head.get("VersionId"))
        event["Records"][0]["s3"]["bucket"]["name"] = INPUT
        return event

    def trigger(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.handler(self.distributed)(event, LocalContext())
        return result["results"][0]  # type: ignore[no-any-return]

    def wait(self, execution: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return described  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"{execution} still running after {timeout} s")

    def single_output(self, key: str, body: bytes) -> bytes:
        """What the single-invocation path writes for the same object."""
        self.s3.put_object(Bucket=INPUT, Key=f"single/{key}", Body=body)
        event = s3_event(f"single/{key}", None)
        event["Records"][0]["s3"]["bucket"]["name"] = INPUT
        result = self.handler(self.single)(event, LocalContext())["results"][0]
        assert result["status"] == "done" and result["mode"] == "single", result
        return self.read(f"predictions/single/{key}.predictions.jsonl")

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=OUTPUT, Key=key)["Body"].read()  # type: ignore[no-any-return]

    def summary(self, key: str) -> dict[str, Any]:
        return json.loads(self.read(f"predictions/{key}.summary.json"))  # type: ignore[no-any-return]

    def work_files(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=OUTPUT, Prefix="_work/")
        return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture
def cloud(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    import moto.awslambda.models as lambda_models

    calls: list[dict[str, Any]] = []
    faults: dict[Any, str] = {}
    lock = threading.Lock()
    model = get_model(tiny_model, 1)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = make_client()
        for bucket in (INPUT, OUTPUT):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=INPUT, VersioningConfiguration={"Status": "Enabled"})
        iam = make_client("iam")
        role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("handler.py", "")
        function_arn = make_client("lambda").create_function(
            FunctionName="classifier-batch",
            Runtime="python3.12",
            Role=role,
            Handler="handler.lambda_handler",
            Code={"ZipFile": code.getvalue()},
        )["FunctionArn"]
        sfn = make_client("stepfunctions")
        machine = sfn.create_state_machine(
            name="classifier-shards", definition=definition(function_arn, 4), roleArn=role
        )["stateMachineArn"]
        base = Settings(
            model_dir=tiny_model,
            num_threads=1,
            input_bucket=INPUT,
            output_bucket=OUTPUT,
            output_prefix="predictions/",
            batch_chunk_size=64,
        )
        distributed = LambdaFunction(
            dataclasses.replace(
                base, state_machine_arn=machine, distributed_min_bytes=1 << 20, shard_records=30_000
            ),
            model,
            S3Store(s3),
        )
        cloud = Cloud(
            s3, sfn, machine, distributed, LambdaFunction(base, model, S3Store(s3)), calls, faults
        )

        def invoke(self: Any, event: Any = None) -> tuple[str, bool, str]:
            """What Lambda would do with the task's payload: run the handler, or report its
            exception as awslambdaric does (errorType = the exception's class)."""
            payload = event if isinstance(event, dict) else json.loads(event or "{}")
            step = payload.get("distributed")
            index = payload.get("shard", {}).get("index")
            with lock:
                calls.append({"step": step, "index": index})
                fault = faults.pop((step, index), None)
            if fault is not None:
                return json.dumps({"errorType": fault, "errorMessage": "injected"}), True, ""
            try:
                result = make_lambda_handler(distributed)(payload, LocalContext())
            except Exception as exc:
                body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
                return json.dumps(body), True, ""
            return json.dumps(result), False, ""

        monkeypatch.setattr(lambda_models.LambdaFunction, "_invoke_lambda", invoke)
        yield cloud


def jsonl_records(n: int, seed: int = 7) -> bytes:
    """n records of every kind the single path handles: texts, ids of several types, blank
    lines, invalid JSON, missing text, non-string text, CRLF, a BOM, non-ASCII, long lines."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
        kind = rng.random()
        if kind < 0.004:
            lines.append("")
        elif kind < 0.008:
            lines.append(f'{{"id": {i}, "text": ')  # cut short
        elif kind < 0.012:
            lines.append(json.dumps({"id": i}))
        elif kind < 0.016:
            lines.append(json.dumps({"id": i, "text": 42}))
        elif kind < 0.02:
            lines.append(json.dumps({"id": f"r-{i}", "text": f"{text} café ☺"}) + "\r")
        elif kind < 0.024:
            lines.append(json.dumps({"id": [i, {"k": 1.5}], "text": " ".join([text] * 60)}))
        else:
            # A long string id: bigger output lines, so that parts exceed S3's 5 MiB part floor.
            lines.append(json.dumps({"id": f"review-{i:08d}-{'x' * 40}", "text": text}))
    return ("\ufeff" + "\n".join(lines) + "\n").encode()


def csv_records(n: int, seed: int = 11) -> bytes:
    rng = random.Random(seed)
    rows = ["id,text"]
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10)))
        kind = rng.random()
        if kind < 0.01:
            rows.append(f'{i},"{text}\nsecond line"')  # a quoted newline: one record, two lines
        elif kind < 0.015:
            rows.append(f"{i},{text},extra")  # wrong field count
        elif kind < 0.02:
            rows.append(f'{i},"unterminated {text}')  # malformed: runs to a later quote
        else:
            rows.append(f"{i},{text}")
    return ("\n".join(rows) + "\n").encode()


def test_distributed_output_is_byte_identical_and_a_failed_shard_is_retried(cloud: Cloud) -> None:
    """120,000 JSON Lines records in byte-range shards of 40,000; shard 1 fails once and is
    retried by the state machine's Retry; the merge copies the parts (over 5 MiB) inside S3."""
    body = jsonl_records(120_000)
    settings = cloud.distributed.settings
    cloud.distributed.batch.settings = dataclasses.replace(settings, shard_records=40_000)
    cloud.faults[("shard", 1)] = "Lambda.ServiceException"
    event = cloud.upload("reviews/big.jsonl", body)
    started = cloud.trigger(event)
    assert started["status"] == "distributed" and started["why"] == "size", started
    described = cloud.wait(started["execution"])
    assert described["status"] == "SUCCEEDED", described
    out = cloud.read("predictions/reviews/big.jsonl.predictions.jsonl")
    assert out == cloud.single_output("big.jsonl", body)
    lines = out.splitlines()
    assert len(lines) == 120_000
    assert [json.loads(ln)["record"] for ln in lines[::9_999]] == list(range(1, 120_001, 9_999))
    # Every shard ran; shard 1 twice (the injected failure, then the retry); plan and merge once.
    steps = Counter((c["step"], c["index"]) for c in cloud.calls)
    assert steps[("plan", None)] == 1 and steps[("merge", None)] == 1
    assert {i: steps[("shard", i)] for i in range(4)} == {0: 1, 1: 2, 2: 1, 3: 0}
    merged = json.loads(described["output"])
    assert merged["parts"] == {"copied": 3, "joined": 0, "sources": 3}  # UploadPartCopy
    summary = cloud.summary("reviews/big.jsonl")
    single = cloud.summary("single/big.jsonl")
    assert summary["mode"] == "distributed" and summary["shards"] == 3
    for field in ("records", "classified", "errors", "error_kinds", "truncated", "low_confidence"):
        assert summary[field] == single[field], field
    assert summary["source"]["etag"] == event["Records"][0]["s3"]["object"]["eTag"]
    # The job's shard list, chunks, parts and stats are gone (the Map's own result files stay
    # under _work/map-results/ for the lifecycle rule).
    assert [k for k in cloud.work_files() if not k.startswith("_work/map-results/")] == []


def test_distributed_gzip_csv_goes_through_chunk_objects_and_a_rerun_gives_the_same_bytes(
    cloud: Cloud,
) -> None:
    """100,000 CSV records, gzipped (not splittable by bytes): the plan reads it once with the
    single path's reader and writes chunk objects; small parts are joined into one upload part.
    A re-run of the execution with the same input writes the same bytes."""
    body = gzip.compress(csv_records(100_000), mtime=0)
    assert len(body) < 1 << 20
    cloud.distributed.batch.settings = dataclasses.replace(
        cloud.distributed.settings, distributed_min_bytes=1 << 10, shard_records=25_000
    )
    event = cloud.upload("reviews/big.csv.gz", body)
    started = cloud.trigger(event)
    assert started["status"] == "distributed", started
    first = cloud.wait(started["execution"])
    assert first["status"] == "SUCCEEDED", first
    key = "predictions/reviews/big.csv.gz.predictions.jsonl"
    out = cloud.read(key)
    assert out == cloud.single_output("big.csv.gz", body)
    assert b"malformed CSV row (line " in out and b"row has 3 fields, header has 2" in out
    # Re-run: the same job again (as after deleting the output), under a new execution name.
    cloud.s3.delete_object(Bucket=OUTPUT, Key=key)
    cloud.s3.delete_object(Bucket=OUTPUT, Key="predictions/reviews/big.csv.gz.summary.json")
    rerun = cloud.sfn.start_execution(
        stateMachineArn=cloud.machine, name="rerun", input=first["input"]
    )["executionArn"]
    rerun_described = cloud.wait(rerun)
    assert rerun_described["status"] == "SUCCEEDED"
    assert cloud.read(key) == out
    # Parts of well under 5 MiB: read and joined into one upload part (S3's floor).
    parts = json.loads(rerun_described["output"])["parts"]
    assert parts["sources"] > 1 and parts["copied"] == 0 and parts["joined"] == parts["sources"]


def test_distributed_a_repeated_event_starts_nothing(cloud: Cloud) -> None:
    body = jsonl_records(100_000, seed=3)
    event = cloud.upload("reviews/repeat.jsonl", body)
    started = cloud.trigger(event)
    again = cloud.trigger(event)  # S3 delivers at least once: the same event, at once
    assert again["status"] == "already_started" and again["execution"] == started["execution"]
    assert cloud.wait(started["execution"])["status"] == "SUCCEEDED"
    after = cloud.trigger(event)  # and once the output is published
    assert after["status"] == "already_done"
    assert len(cloud.sfn.list_executions(stateMachineArn=cloud.machine)["executions"]) == 1
    plans = [c for c in cloud.calls if c["step"] == "plan"]
    assert len(plans) == 1


def test_distributed_a_shard_for_another_model_fails_the_execution_without_retries(
    cloud: Cloud,
) -> None:
    """A deployment that changes the model mid-execution must not mix two models' answers: the
    shard raises ModelChanged, which the state machine does not retry, and the execution fails
    (the template routes failed executions to the failure queue and an alarm)."""
    body = jsonl_records(100_000, seed=5)
    event = cloud.upload("reviews/mixed.jsonl", body)
    started = cloud.trigger(event)
    execution_input = json.loads(
        cloud.sfn.describe_execution(executionArn=started["execution"])["input"]
    )
    assert cloud.wait(started["execution"])["status"] == "SUCCEEDED"
    cloud.calls.clear()
    job = execution_input["job"]
    job["model_sha256"] = "0" * 64
    failed = cloud.sfn.start_execution(
        stateMachineArn=cloud.machine, name="other-model", input=json.dumps({"job": job})
    )["executionArn"]
    described = cloud.wait(failed)
    assert described["status"] == "FAILED"
    assert [c["step"] for c in cloud.calls] == ["plan"]  # refused at the plan, not retried


def test_distributed_a_time_hand_off_keeps_the_records_done(cloud: Cloud) -> None:
    """An invocation that runs out of time hands the object over with the lines it wrote: the
    real state machine's shards classify only the records after them, and the published output
    is the single path's, byte for byte."""
    from tests.adapters.conftest import RunningOut

    body = jsonl_records(6_000, seed=13)
    cloud.distributed.batch.settings = dataclasses.replace(
        cloud.distributed.settings, shard_records=1_000
    )
    event = cloud.upload("reviews/slow.jsonl", body)
    handler = cloud.handler(cloud.distributed)
    started = handler(event, RunningOut(asks=40))["results"][0]
    assert started["status"] == "distributed" and started["why"] == "time", started
    done = started["records_done"]
    assert 0 < done < 6_000 and done % 64 == 0
    described = cloud.wait(started["execution"])
    assert described["status"] == "SUCCEEDED", described
    assert cloud.read("predictions/reviews/slow.jsonl.predictions.jsonl") == cloud.single_output(
        "slow.jsonl", body
    )
    summary = cloud.summary("reviews/slow.jsonl")
    assert summary["resumed_after"] == done and summary["records"] == 6_000
    shards_run = [c for c in cloud.calls if c["step"] == "shard"]
    assert len(shards_run) == -(-(6_000 - done) // 1_024)  # shards of 1,024: whole chunks of 64
    assert [k for k in cloud.work_files() if not k.startswith("_work/map-results/")] == []

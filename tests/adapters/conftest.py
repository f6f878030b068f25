"""S3 for the batch tests: moto in-process (mock_aws) and a ThreadedMotoServer on 127.0.0.1
that boto3 reaches over real HTTP through AWS_ENDPOINT_URL_S3."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from moto import mock_aws

from handler.adapters.s3_store import S3Store, make_client
from handler.config import Settings
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
from handler.local.context import LocalContext
from tests.conftest import load_event

INPUT, OUTPUT = "classifier-input", "classifier-output"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(params=["in-process", "server"])
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if request.param == "in-process":
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        with mock_aws():
            client = make_client()
            yield _with_buckets(client)
    else:
        endpoint = request.getfixturevalue("moto_server")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        client = make_client()  # the production factory, honouring AWS_ENDPOINT_URL_S3
        assert client.meta.endpoint_url == endpoint
        yield _with_buckets(client)
        for bucket in (INPUT, OUTPUT):
            for obj in client.list_object_versions(Bucket=bucket).get("Versions", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])
            client.delete_bucket(Bucket=bucket)


def _with_buckets(client: Any) -> Any:
    for bucket in (INPUT, OUTPUT):
        client.create_bucket(Bucket=bucket)
    return client


@dataclass
class Batch:
    client: Any
    handler: Any
    function: LambdaFunction
    settings: Settings

    def upload(self, key: str, data: bytes | str) -> dict[str, Any]:
        body = data.encode() if isinstance(data, str) else data
        self.client.put_object(Bucket=INPUT, Key=key, Body=body)
        head = self.client.head_object(Bucket=INPUT, Key=key)
        return s3_event(key, head["ETag"].strip('"'), head.get("VersionId"))

    def invoke(self, event: dict[str, Any], context: Any = None) -> Any:
        return self.handler(event, context or LocalContext())

    def output(self, key: str) -> list[dict[str, Any]]:
        body = self.client.get_object(Bucket=OUTPUT, Key=f"predictions/{key}.predictions.jsonl")[
            "Body"
        ].read()
        return [json.loads(line) for line in body.decode().splitlines()]

    def summary(self, key: str) -> dict[str, Any]:
        body = self.client.get_object(Bucket=OUTPUT, Key=f"predictions/{key}.summary.json")[
            "Body"
        ].read()
        data: dict[str, Any] = json.loads(body)
        return data


def s3_event(key: str, etag: str | None, version_id: str | None = None) -> dict[str, Any]:
    event = load_event("s3-put.json")
    obj = event["Records"][0]["s3"]["object"]
    obj["key"] = quote_plus(key, safe="/")  # as S3 sends it: spaces as '+', unicode as %XX
    obj["eTag"] = etag
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    event["Records"][0]["s3"]["bucket"]["name"] = INPUT
    return event


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


@pytest.fixture
def batch(s3: Any, tiny_model: Path) -> Batch:
    settings = Settings(
        model_dir=tiny_model,
        num_threads=1,
        input_bucket=INPUT,
        output_bucket=OUTPUT,
        output_prefix="predictions/",
        batch_chunk_size=4,
    )
    function = LambdaFunction(settings, get_model(tiny_model, 1), S3Store(s3))
    return Batch(s3, make_lambda_handler(function), function, settings)


class ShortContext(LocalContext):
    """A context whose time budget is always nearly spent."""

    def get_remaining_time_in_millis(self) -> int:
        return 1


class RunningOut(LocalContext):
    """A context with plenty of time for its first `asks` questions, then none."""

    def __init__(self, asks: int) -> None:
        super().__init__()
        self.asks = asks

    def get_remaining_time_in_millis(self) -> int:
        self.asks -= 1
        return 900_000 if self.asks >= 0 else 1


def with_state_machine(batch: Batch, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> str:
    """A state machine on the same moto (in-process or server) and the batch function set to
    hand big objects to it; returns its ARN."""
    import dataclasses

    import boto3

    endpoint = batch.client.meta.endpoint_url
    kwargs = {} if "amazonaws.com" in endpoint else {"endpoint_url": endpoint}
    if kwargs:  # the server: the function's own Step Functions client goes there too
        monkeypatch.setenv("AWS_ENDPOINT_URL_SFN", endpoint)
    iam = boto3.client("iam", region_name="us-east-1", **kwargs)
    unique = uuid.uuid4().hex[:12]  # the server lives for the session: one machine per test
    role = iam.create_role(RoleName=f"shards-{unique}", AssumeRolePolicyDocument="{}")["Role"]
    sfn = boto3.client("stepfunctions", region_name="us-east-1", **kwargs)
    arn: str = sfn.create_state_machine(
        name=f"shards-{unique}",
        roleArn=role["Arn"],
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]
    settings = dataclasses.replace(batch.settings, state_machine_arn=arn, **changes)
    batch.function.batch.settings = settings
    return arn

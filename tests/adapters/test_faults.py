"""Data faults keep what was readable and say where they struck; poison messages are never
dropped silently. Every case runs against moto in-process and over HTTP (the `s3` fixture)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handler.errors import MalformedEvent
from tests.adapters.conftest import Batch, gz
from tests.conftest import load_event

LINES = [f'{{"id": {i}, "text": "the movie was good {i}"}}' for i in range(1, 41)]


def _strict(batch: Batch, key: str) -> list[dict[str, Any]]:
    """Output lines, parsed as RFC 8259 JSON (NaN/Infinity would fail here)."""
    body = batch.client.get_object(
        Bucket="classifier-output", Key=f"predictions/{key}.predictions.jsonl"
    )["Body"].read()

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in output")

    return [json.loads(line, parse_constant=refuse) for line in body.decode().splitlines()]


def _check_incomplete(batch: Batch, key: str, fault: str) -> dict[str, Any]:
    summary = batch.summary(key)
    assert summary["object_incomplete"] is True
    assert fault in summary["data_fault"]["error"]
    assert summary["data_fault"]["record"] == summary["records"] + 1
    assert len(_strict(batch, key)) == summary["records"]
    return summary


def test_gz_that_is_not_gzip_gives_an_empty_incomplete_output(batch: Batch) -> None:
    key = "incoming/notgzip.jsonl.gz"
    result = batch.invoke(batch.upload(key, "\n".join(LINES)))["results"][0]
    assert result["status"] == "done" and result["records"] == 0
    _check_incomplete(batch, key, "gzip")


def test_gzip_followed_by_other_bytes_keeps_every_record(batch: Batch) -> None:
    key = "incoming/trailing.jsonl.gz"
    batch.invoke(batch.upload(key, gz("\n".join(LINES) + "\n") + b"this is not gzip"))
    summary = _check_incomplete(batch, key, "gzip")
    assert summary["records"] == 40 and summary["classified"] == 40


def test_truncated_gzip_keeps_the_records_before_the_cut(batch: Batch) -> None:
    key = "incoming/cut.txt.gz"
    text = "\n".join(f"a good film number {i} " * 20 for i in range(3000)) + "\n"
    data = gz(text)
    batch.invoke(batch.upload(key, data[: len(data) // 2]))
    summary = _check_incomplete(batch, key, "gzip")
    assert 0 < summary["records"] < 3000
    lines = _strict(batch, key)
    assert [ln["record"] for ln in lines] == list(range(1, summary["records"] + 1))
    assert all("label" in ln for ln in lines)


def test_malformed_csv_header_is_a_data_fault_not_a_retry(batch: Batch) -> None:
    key = "incoming/header.csv"
    result = batch.invoke(batch.upload(key, '"id,text\n1,good\n'))["results"][0]
    assert result["status"] == "done"
    _check_incomplete(batch, key, "CSV header")


def test_hostile_jsonl_lines_are_per_record_errors(batch: Batch) -> None:
    key = "incoming/hostile.jsonl"
    lines = [
        '{"id": 1, "text": "good"}',
        '{"id": ' + "9" * 5000 + ', "text": "good"}',
        '{"id": 3, "text": "good", "x": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"id": NaN, "text": "good"}',
        '{"id": Infinity, "text": "good"}',
        '{"id": 1e400, "text": "good"}',
        '{"id": 7, "text": "\\u200b\\u200b"}',
        '{"id": 8, "text": "bad"}',
    ]
    batch.invoke(batch.upload(key, "\n".join(lines)))
    out = _strict(batch, key)
    assert [ln["record"] for ln in out] == list(range(1, 9))
    assert out[0]["label"] == "POSITIVE" and out[7]["label"] == "NEGATIVE"
    assert "too long" in out[1]["error"]
    assert "nested deeper" in out[2]["error"]
    assert "NaN is not JSON" in out[3]["error"] and "Infinity is not JSON" in out[4]["error"]
    assert out[5]["id"] == "1e400" and out[5]["label"] == "POSITIVE"  # kept as its literal
    assert out[6]["id"] == 7 and "no content" in out[6]["error"]
    summary = batch.summary(key)
    assert summary["object_incomplete"] is False and summary["errors"] == 5


def test_unsupported_suffix_is_skipped_and_said(batch: Batch) -> None:
    result = batch.invoke(batch.upload("incoming/picture.png", b"\x89PNG"))["results"][0]
    assert result["status"] == "skipped" and "unsupported file type" in result["reason"]


def test_sns_message_that_is_not_json_names_sns(batch: Batch) -> None:
    event = load_event("sns-s3.json")
    event["Records"][0]["Sns"]["Message"] = "not json {"
    with pytest.raises(MalformedEvent, match=r"SNS record 0: Message is not JSON"):
        batch.invoke(event)
    event["Records"][0]["Sns"]["Message"] = json.dumps({"hello": "world"})
    with pytest.raises(MalformedEvent, match=r"SNS record 0 is not an S3 notification"):
        batch.invoke(event)


def test_sqs_poison_messages_are_failures_with_a_reason(
    batch: Batch, caplog: pytest.LogCaptureFixture
) -> None:
    good = batch.upload("incoming/fine.txt", "good\nbad\n")
    template = load_event("sqs-s3.json")["Records"][0]
    messages = [
        dict(template, messageId="ok", body=json.dumps(good)),
        dict(template, messageId="not-json", body="hello"),
        dict(template, messageId="not-s3", body=json.dumps({"order": 42})),
        dict(
            template,
            messageId="sns-bad",
            body=json.dumps({"Type": "Notification", "Message": "{oops"}),
        ),
    ]
    result = batch.invoke({"Records": messages})
    failed = [f["itemIdentifier"] for f in result["batchItemFailures"]]
    assert failed == ["not-json", "not-s3", "sns-bad"]
    logs = caplog.text
    assert "SQS message not-json is not JSON" in logs
    assert "SQS message not-s3 is not an S3 notification (keys: order)" in logs
    assert "SNS envelope's Message is not JSON" in logs
    assert len(batch.output("incoming/fine.txt")) == 2


def test_a_gzip_bomb_ends_as_a_data_fault_naming_its_limit(batch: Batch) -> None:
    import gzip

    key = "incoming/bomb.txt.gz"
    body = gzip.compress((b"y" * 999 + b"\n") * 60_000, compresslevel=9)
    result = batch.invoke(batch.upload(key, body))["results"][0]
    assert result["status"] == "done"
    summary = _check_incomplete(batch, key, "MAX_COMPRESSION_RATIO")
    assert 0 < summary["records"] < 20_000

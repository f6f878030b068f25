"""Objects as they arrive (S3): the encodings and containers objects really come in, keys and
buckets an event may name. Each ends in the right answer, a recorded data fault with nothing
invented, or a refusal that is said and never retried; through the real lambda_handler and S3
(moto, in-process and as a server)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import replace
from typing import Any

import pytest

from handler.batch.job import MAX_KEY_BYTES
from handler.errors import ConfigError
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
from handler.local.context import LocalContext
from tests.adapters.conftest import INPUT, OUTPUT, Batch, gz, s3_event
from tests.conftest import load_event

TEXTS = ["the movie was great", "awful boring plot", "i loved it"]
LABELS = ["POSITIVE", "NEGATIVE", "POSITIVE"]


def _labels(batch: Batch, key: str) -> list[Any]:
    return [ln.get("label", ln.get("error")) for ln in batch.output(key)]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_text_with_a_bom_is_decoded(batch: Batch, encoding: str) -> None:
    text = "\n".join(TEXTS) + "\n"
    data = text.encode(encoding)
    if encoding.endswith(("-le", "-be")):  # these codecs write no BOM: add the one for the order
        data = ("\ufeff" + text).encode(encoding)
    key = f"incoming/windows-{encoding}.txt"
    batch.invoke(batch.upload(key, data))
    assert _labels(batch, key) == LABELS  # 3 lines, 3 records: none phantom, none mis-decoded
    assert batch.summary(key)["object_incomplete"] is False


def test_utf16_jsonl_keeps_ids_and_texts(batch: Batch) -> None:
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS))
    batch.invoke(batch.upload("incoming/u16.jsonl", lines.encode("utf-16")))
    out = batch.output("incoming/u16.jsonl")
    assert [ln["id"] for ln in out] == [0, 1, 2] and [ln["label"] for ln in out] == LABELS


def test_invalid_utf16_is_a_data_fault_not_records(batch: Batch) -> None:
    key = "incoming/broken-u16.txt"
    data = ("great\n".encode("utf-16")) + b"\x00\xd8\x41"  # a lone high surrogate, cut short
    batch.invoke(batch.upload(key, data))
    summary = batch.summary(key)
    assert summary["object_incomplete"] is True and "UTF-16" in summary["data_fault"]["error"]


@pytest.mark.parametrize("data", [b"great\rawful\ri loved it\r", b"great\rawful\r\ni loved it"])
def test_cr_only_line_ends_split_records(batch: Batch, data: bytes) -> None:
    batch.invoke(batch.upload("incoming/mac.txt", data))
    assert _labels(batch, "incoming/mac.txt") == LABELS


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.parametrize("key", ["incoming/bundle.jsonl.gz", "incoming/bundle.txt"])
def test_a_tar_archive_is_a_data_fault_naming_it(batch: Batch, key: str) -> None:
    body = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
    data = _tar({"a.jsonl": body, "b.jsonl": body})
    batch.invoke(batch.upload(key, gzip.compress(data) if key.endswith(".gz") else data))
    summary = batch.summary(key)
    assert summary["records"] == 0 and summary["object_incomplete"] is True
    assert "tar archive" in summary["data_fault"]["error"]
    assert batch.output(key) == []  # no record made of a header


def test_a_zip_archive_is_a_data_fault_naming_it(batch: Batch) -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("a.txt", "\n".join(TEXTS))
    batch.invoke(batch.upload("incoming/bundle.txt", buf.getvalue()))
    summary = batch.summary("incoming/bundle.txt")
    assert summary["records"] == 0 and "zip archive" in summary["data_fault"]["error"]


def test_a_zero_byte_gz_is_not_a_gzip_stream(batch: Batch) -> None:
    batch.invoke(batch.upload("incoming/empty.jsonl.gz", b""))
    summary = batch.summary("incoming/empty.jsonl.gz")
    assert summary["object_incomplete"] is True
    assert "0 bytes" in summary["data_fault"]["error"]
    assert batch.summary("incoming/empty.jsonl.gz")["records"] == 0


def test_an_empty_gzip_stream_is_still_complete(batch: Batch) -> None:
    batch.invoke(batch.upload("incoming/nothing.jsonl.gz", gz("")))
    assert batch.summary("incoming/nothing.jsonl.gz")["object_incomplete"] is False


def test_a_record_with_a_repeated_key_is_an_error_record(batch: Batch) -> None:
    data = '{"text": "great", "text": "awful"}\n{"text": "awful boring plot"}\n'
    batch.invoke(batch.upload("incoming/dup.jsonl", data))
    out = batch.output("incoming/dup.jsonl")
    assert "duplicate key 'text'" in out[0]["error"] and out[1]["label"] == "NEGATIVE"


KEYS = ["incoming/c++ notes.txt", "incoming/100% sure: yes.txt", "incoming/a+b %2B c.txt"]


def _eventbridge(batch: Batch, key: str) -> dict[str, Any]:
    event = load_event("eventbridge-s3.json")
    event["detail"]["bucket"]["name"] = INPUT
    event["detail"]["object"]["key"] = key  # as EventBridge sends it: not form-encoded
    head = batch.client.head_object(Bucket=INPUT, Key=key)
    event["detail"]["object"]["etag"] = head["ETag"].strip('"')
    event["detail"]["object"].pop("version-id", None)
    return event


def _sqs(notification: dict[str, Any]) -> dict[str, Any]:
    event = load_event("sqs-s3.json")
    event["Records"] = [event["Records"][0]]
    event["Records"][0]["body"] = json.dumps(notification)
    return event


def _sns(notification: dict[str, Any]) -> dict[str, Any]:
    event = load_event("sns-s3.json")
    event["Records"] = [event["Records"][0]]
    event["Records"][0]["Sns"]["Message"] = json.dumps(notification)
    return event


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("envelope", ["s3", "sqs", "sns", "sns-in-sqs", "eventbridge"])
def test_keys_with_plus_space_percent_colon_through_every_envelope(
    batch: Batch, key: str, envelope: str
) -> None:
    notification = batch.upload(key, "\n".join(TEXTS) + "\n")  # S3's form-encoded key
    event = {
        "s3": lambda: notification,
        "sqs": lambda: _sqs(notification),
        "sns": lambda: _sns(notification),
        # S3 -> SNS -> SQS: the SQS body is SNS's envelope (raw message delivery off).
        "sns-in-sqs": lambda: _sqs({"Type": "Notification", "Message": json.dumps(notification)}),
        "eventbridge": lambda: _eventbridge(batch, key),
    }[envelope]()
    result = batch.invoke(event)
    assert result.get("batchItemFailures", []) == []
    assert _labels(batch, key) == LABELS


def test_an_event_for_another_bucket_is_refused_not_classified(batch: Batch) -> None:
    other = "someone-elses-bucket"
    batch.client.create_bucket(Bucket=other)
    batch.client.put_object(Bucket=other, Key="incoming/x.txt", Body=b"great\n")
    event = s3_event("incoming/x.txt", None)
    event["Records"][0]["s3"]["bucket"]["name"] = other
    result = batch.invoke(event)["results"][0]
    assert result["status"] == "refused" and f"not INPUT_BUCKET={INPUT!r}" in result["reason"]
    listed = batch.client.list_objects_v2(Bucket=OUTPUT).get("Contents", [])
    assert listed == []


def test_a_key_too_long_for_its_output_key_gets_a_short_hashed_one(batch: Batch) -> None:
    key = "incoming/" + "r" * 990 + ".txt"  # 1,003 bytes: with the suffixes, over 1,024
    batch.invoke(batch.upload(key, "\n".join(TEXTS) + "\n"))
    listed = [o["Key"] for o in batch.client.list_objects_v2(Bucket=OUTPUT)["Contents"]]
    predictions = [k for k in listed if k.endswith(".predictions.jsonl")]
    assert len(predictions) == 1 and len(predictions[0].encode()) <= MAX_KEY_BYTES
    assert "~" in predictions[0] and predictions[0].startswith("predictions/incoming/rrr")
    summary_key = next(k for k in listed if k.endswith(".summary.json"))
    summary = json.loads(batch.client.get_object(Bucket=OUTPUT, Key=summary_key)["Body"].read())
    assert summary["output_key_shortened"] is True
    assert summary["output"]["key"] == predictions[0] and summary["source"]["key"] == key
    body = batch.client.get_object(Bucket=OUTPUT, Key=predictions[0])["Body"].read()
    assert [json.loads(ln)["label"] for ln in body.decode().splitlines()] == LABELS
    # The same key again: the same short key (deterministic), found as already done.
    again = batch.invoke(s3_event(key, summary["source"]["etag"]))["results"][0]
    assert again["status"] == "already_done"


def test_work_area_and_outputs_are_kept_apart(batch: Batch) -> None:
    for out, work in (("_w/", "_w/"), ("out/", "out/tmp/"), ("tmp/out/", "tmp/")):
        with pytest.raises(ConfigError, match="overlaps WORK_PREFIX"):
            replace(batch.settings, output_prefix=out, work_prefix=work).check_no_recursion()
    settings = replace(batch.settings, output_prefix="")
    function = LambdaFunction(
        settings, get_model(settings.model_dir, 1), batch.function.batch.store
    )
    handler = make_lambda_handler(function)
    event = batch.upload("_work/x.txt", "great\n")
    result = handler(event, LocalContext())["results"][0]
    assert result["status"] == "refused" and "WORK_PREFIX='_work/'" in result["reason"]
    assert batch.client.list_objects_v2(Bucket=OUTPUT).get("Contents", []) == []

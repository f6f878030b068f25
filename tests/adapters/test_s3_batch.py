"""S3-triggered batch classification: formats, bad records, keys, idempotency, failures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.adapters.conftest import (
    INPUT,
    OUTPUT,
    Batch,
    ShortContext,
    gz,
    s3_event,
    with_state_machine,
)
from tests.conftest import load_event

GOOD = ["the movie was great", "awful boring plot", "i loved it", "a dull and bad film", "best fun"]
EXPECTED = ["POSITIVE", "NEGATIVE", "POSITIVE", "NEGATIVE", "POSITIVE"]


def _jsonl() -> str:
    return "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(GOOD))


def _csv() -> str:
    rows = [f'r{i},"{t}"' for i, t in enumerate(GOOD)]
    return "\ufeffid,text\r\n" + "\r\n".join(rows) + "\r\n"


def _txt() -> str:
    return "\n".join(GOOD) + "\n"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "txt"])
@pytest.mark.parametrize("compressed", [False, True])
def test_every_format_and_its_gzip(batch: Batch, fmt: str, compressed: bool) -> None:
    content = {"jsonl": _jsonl, "csv": _csv, "txt": _txt}[fmt]()
    key = f"incoming/reviews.{fmt}" + (".gz" if compressed else "")
    result = batch.invoke(batch.upload(key, gz(content) if compressed else content))
    assert result["results"][0]["status"] == "done"
    lines = batch.output(key)
    assert [ln["record"] for ln in lines] == [1, 2, 3, 4, 5]
    assert [ln["label"] for ln in lines] == EXPECTED
    if fmt != "txt":
        assert [ln["id"] for ln in lines] == [f"r{i}" for i in range(5)]
    summary = batch.summary(key)
    assert summary["records"] == 5 and summary["errors"] == 0 and summary["classified"] == 5
    assert len(summary["model_sha256"]) == 64
    assert summary["format"] == f".{fmt}" + (".gz" if compressed else "")


def test_bad_jsonl_records_are_reported_in_place(batch: Batch) -> None:
    lines = [
        json.dumps({"id": 1, "text": "great fun"}),
        "{not json",
        json.dumps({"id": 3}),
        json.dumps({"id": 4, "text": ""}),
        json.dumps({"id": 5, "text": 42}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"id": 8, "text": None}),
        json.dumps({"id": 9, "text": "awful"}),
    ]
    raw = (
        ("\n".join(lines) + "\n").encode()
        + b'{"id": 10, "text": "caf\xe9"}\n'
        + b'{"id": 11, "text": "bad \\ud800"}\n'
    )
    result = batch.invoke(batch.upload("incoming/mixed.jsonl", raw))
    out = batch.output("incoming/mixed.jsonl")
    assert len(out) == 11 and [ln["record"] for ln in out] == list(range(1, 12))
    assert out[0]["label"] == "POSITIVE" and out[8]["label"] == "NEGATIVE"
    errors = {ln["record"]: ln["error"] for ln in out if "error" in ln}
    assert "invalid JSON" in errors[2]
    assert errors[3] == "missing 'text'" and out[2]["id"] == 3
    assert "empty" in errors[4] and "int" in errors[5] and "JSON object" in errors[6]
    assert errors[7] == "empty line" and "null" in errors[8]
    assert errors[10] == "not valid UTF-8" and "surrogate" in errors[11]
    assert result["results"][0]["errors"] == 9 and result["results"][0]["records"] == 11


def test_bad_csv_rows_are_reported_in_place(batch: Batch) -> None:
    raw = (
        b'id,text\n1,"great, really great"\n2\n3,"multi\nline awful"\n4,ok,extra\n5,"   "\n'
        b'6,caf\xe9\n7,"unterminated\n'
    )
    batch.invoke(batch.upload("incoming/mixed.csv", raw))
    out = batch.output("incoming/mixed.csv")
    assert [ln["record"] for ln in out] == list(range(1, len(out) + 1))
    assert out[0]["label"] == "POSITIVE" and out[2]["label"] == "NEGATIVE"
    assert "fields" in out[1]["error"] and "fields" in out[3]["error"]
    assert "empty" in out[4]["error"] and out[5]["error"] == "not valid UTF-8"
    assert "error" in out[6] and len(out) == 7


def test_csv_without_text_column_is_a_data_fault_naming_the_columns(batch: Batch) -> None:
    batch.invoke(batch.upload("incoming/notext.csv", "id,body\n1,good\n2,bad\n"))
    assert batch.output("incoming/notext.csv") == []
    summary = batch.summary("incoming/notext.csv")
    assert summary["object_incomplete"] is True and summary["data_fault"]["record"] == 1
    assert "no 'text' column" in summary["data_fault"]["error"]
    assert "['id', 'body']" in summary["data_fault"]["error"]


def test_txt_empty_lines_and_crlf(batch: Batch) -> None:
    batch.invoke(batch.upload("incoming/notes.txt", b"great\r\n\r\nawful\r\n  \n"))
    out = batch.output("incoming/notes.txt")
    assert [ln.get("label", ln.get("error")) for ln in out] == [
        "POSITIVE",
        "empty line",
        "NEGATIVE",
        "empty line",
    ]


@pytest.mark.parametrize("key", ["incoming/my reviews +été.jsonl", "incoming/a%b/日本 (1).txt"])
def test_url_encoded_keys_are_decoded(batch: Batch, key: str) -> None:
    event = batch.upload(key, _jsonl() if key.endswith("jsonl") else _txt())
    assert "+" in event["Records"][0]["s3"]["object"]["key"]
    batch.invoke(event)
    assert len(batch.output(key)) == 5


def test_empty_object_and_header_only_csv(batch: Batch) -> None:
    for key, data in [
        ("incoming/empty.jsonl", b""),
        ("incoming/header.csv", b"id,text\n"),
        ("incoming/empty.txt.gz", gz("")),
    ]:
        batch.invoke(batch.upload(key, data))
        assert batch.output(key) == []
        assert batch.summary(key)["records"] == 0


def test_repeated_event_gives_the_same_output_once(batch: Batch) -> None:
    key = "incoming/again.jsonl"
    event = batch.upload(key, _jsonl())
    first = batch.invoke(event)["results"][0]
    etag = batch.client.head_object(Bucket=OUTPUT, Key=f"predictions/{key}.predictions.jsonl")[
        "ETag"
    ]
    second = batch.invoke(event)["results"][0]
    assert first["status"] == "done" and second["status"] == "already_done"
    assert (
        batch.client.head_object(Bucket=OUTPUT, Key=f"predictions/{key}.predictions.jsonl")["ETag"]
        == etag
    )
    keys = [o["Key"] for o in batch.client.list_objects_v2(Bucket=OUTPUT)["Contents"]]
    assert sorted(keys) == [
        f"predictions/{key}.predictions.jsonl",
        f"predictions/{key}.summary.json",
    ]
    # A new upload under the same key is new content: classified again, not skipped.
    third = batch.invoke(batch.upload(key, _txt().replace("great", "awful")))["results"][0]
    assert third["status"] == "done"


def test_changed_object_is_not_classified_under_the_old_event(batch: Batch) -> None:
    key = "incoming/changing.txt"
    old_event = batch.upload(key, "great\n")
    batch.upload(key, "awful\n")  # overwritten before the first event is handled
    result = batch.invoke(old_event)["results"][0]
    assert result["status"] == "skipped" and "changed since the event" in result["reason"]
    with pytest.raises(ClientError):
        batch.output(key)


def test_missing_object_raises_so_lambda_retries(batch: Batch) -> None:
    with pytest.raises(ClientError) as info:
        batch.invoke(s3_event("incoming/never-uploaded.jsonl", None))
    assert info.value.response["Error"]["Code"] in ("NoSuchKey", "404")


def _removed_unsupported_extension(batch: Batch) -> None:
    from handler.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unsupported file type"):
        batch.invoke(batch.upload("incoming/picture.png", b"\x89PNG"))


def test_event_for_own_output_is_refused(batch: Batch) -> None:
    batch.client.put_object(Bucket=OUTPUT, Key="predictions/x.jsonl", Body=b"{}\n")
    event = s3_event("predictions/x.jsonl", None)
    event["Records"][0]["s3"]["bucket"]["name"] = OUTPUT
    result = batch.invoke(event)["results"][0]
    assert result["status"] == "refused"


def test_sqs_wrapped_notifications_report_partial_failures(batch: Batch) -> None:
    good = batch.upload("incoming/sqs.jsonl", _jsonl())
    event = load_event("sqs-s3.json")
    ok_msg = dict(event["Records"][0], messageId="ok", body=json.dumps(good))
    bad_msg = dict(
        event["Records"][0],
        messageId="bad",
        body=json.dumps(s3_event("incoming/missing.jsonl", None)),
    )
    test_msg = dict(
        event["Records"][0], messageId="test", body=json.dumps({"Event": "s3:TestEvent"})
    )
    result = batch.invoke({"Records": [ok_msg, bad_msg, test_msg]})
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert len(batch.output("incoming/sqs.jsonl")) == 5


def test_eventbridge_object_created(batch: Batch) -> None:
    key = "incoming/notes+1.txt.gz"
    batch.upload(key, gz(_txt()))
    event = load_event("eventbridge-s3.json")
    event["detail"]["bucket"]["name"] = INPUT
    event["detail"]["object"]["key"] = key  # EventBridge gives the key as it is: '+' stays
    event["detail"]["object"]["etag"] = batch.client.head_object(Bucket=INPUT, Key=key)[
        "ETag"
    ].strip('"')
    batch.invoke(event)
    assert [ln["label"] for ln in batch.output(key)] == EXPECTED


def test_versioned_bucket_reads_the_announced_version(batch: Batch) -> None:
    batch.client.put_bucket_versioning(Bucket=INPUT, VersioningConfiguration={"Status": "Enabled"})
    key = "incoming/versioned.txt"
    first = batch.upload(key, "great\n")
    batch.upload(key, "awful\nawful\n")
    assert first["Records"][0]["s3"]["object"].get("versionId")
    batch.invoke(first)
    assert [ln["label"] for ln in batch.output(key)] == ["POSITIVE"]


def test_an_object_out_of_time_is_handed_to_the_state_machine_once(
    batch: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = with_state_machine(batch, monkeypatch)
    key = "incoming/slow.jsonl"
    content = "".join(json.dumps({"id": i, "text": GOOD[i % 5]}) + "\n" for i in range(22))
    event = batch.upload(key, content)
    result = batch.invoke(event, ShortContext())["results"][0]
    assert result["status"] == "distributed" and result["why"] == "time"
    assert result["execution"].startswith(arn.replace(":stateMachine:", ":execution:"))
    # Nothing half-written is published; the lines written so far wait in the work area for
    # the distributed path, which continues after them.
    assert "Contents" not in batch.client.list_objects_v2(Bucket=OUTPUT, Prefix="predictions/")
    head = batch.client.list_objects_v2(Bucket=OUTPUT, Prefix="_work/")["Contents"]
    assert [o["Key"].rsplit("/", 1)[-1] for o in head] == ["head.jsonl"]
    assert result["records_done"] == batch.settings.batch_chunk_size
    # The same event again (S3 delivers at least once): the execution has it, nothing starts.
    again = batch.invoke(event, ShortContext())["results"][0]
    assert again["status"] == "already_started" and again["execution"] == result["execution"]
    # Plenty of time: the object completes here, in one invocation.
    done = batch.invoke(event)["results"][0]
    assert done["status"] == "done" and done["mode"] == "single" and done["records"] == 22


def test_an_object_over_the_size_threshold_goes_to_the_state_machine_unread(
    batch: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_state_machine(batch, monkeypatch, distributed_min_bytes=100)
    small = batch.upload("incoming/small.txt", "great\n" * 10)  # 60 bytes
    big = batch.upload("incoming/big.txt", "great\n" * 20)  # 120 bytes
    assert batch.invoke(small)["results"][0]["mode"] == "single"
    handed = batch.invoke(big)["results"][0]
    assert handed["status"] == "distributed" and handed["why"] == "size"
    assert handed["source"]["size"] == 120 and handed["source"]["etag"]


def test_without_a_state_machine_an_object_runs_to_the_end(batch: Batch) -> None:
    """Local tools and functions without STATE_MACHINE_ARN have nowhere to hand over to."""
    key = "incoming/local.txt"
    result = batch.invoke(batch.upload(key, "great\nawful\n" * 11), ShortContext())
    assert result["results"][0]["status"] == "done"
    assert [ln["record"] for ln in batch.output(key)] == list(range(1, 23))


def test_sns_fan_out_direct_and_through_sqs(batch: Batch) -> None:
    key = "incoming/fanout.txt"
    notification = batch.upload(key, _txt())
    event = load_event("sns-s3.json")
    event["Records"][0]["Sns"]["Message"] = json.dumps(notification)
    result = batch.invoke(event)
    assert result["results"][0]["status"] == "done"
    assert [ln["label"] for ln in batch.output(key)] == EXPECTED
    # S3 -> SNS -> SQS without raw message delivery: the SQS body is the SNS envelope.
    key2 = "incoming/fanout2.txt"
    envelope = dict(event["Records"][0]["Sns"], Message=json.dumps(batch.upload(key2, _txt())))
    sqs = load_event("sqs-s3.json")
    sqs["Records"][0]["body"] = json.dumps(envelope)
    assert batch.invoke(sqs) == {"batchItemFailures": []}
    assert [ln["label"] for ln in batch.output(key2)] == EXPECTED


@pytest.mark.parametrize("bad", ["missing", "malformed"])
def test_every_record_of_a_direct_event_is_tried_before_a_failure_is_raised(
    batch: Batch, bad: str
) -> None:
    from handler.errors import MalformedEvent, ObjectsFailed

    keys = [f"incoming/many-{i}.txt" for i in range(7)]
    records = []
    for i, key in enumerate(keys):
        if i == 4:
            if bad == "missing":  # announced, then gone before the function read it
                records += batch.upload(key, "great\n")["Records"]
                batch.client.delete_object(Bucket=batch.settings.input_bucket, Key=key)
            else:
                records.append({"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}})
            continue
        records += batch.upload(key, f"great {i}\nawful\n")["Records"]
    expected = MalformedEvent if bad == "malformed" else (ObjectsFailed, MalformedEvent)
    with pytest.raises(expected, match="1 of 7 objects failed \\(records 4 \\("):
        batch.invoke({"Records": records})
    for i, key in enumerate(keys):
        if i != 4:
            assert [ln["record"] for ln in batch.output(key)] == [1, 2]
    # The retry Lambda makes of the whole event redoes nothing that was done.
    with pytest.raises(expected):
        batch.invoke({"Records": records})


def _sequenced(event: dict[str, Any], sequencer: str) -> dict[str, Any]:
    event["Records"][0]["s3"]["object"]["sequencer"] = sequencer
    return event


@pytest.mark.parametrize(
    ("first", "second"),
    [("0055AED6DCD90281E5", "0055AED6DCD90281E6"), ("0055AED6DCD9", "0055AED6DCD90281E5")],
)
def test_an_older_versions_late_event_never_replaces_newer_predictions(
    batch: Batch, first: str, second: str
) -> None:
    batch.client.put_bucket_versioning(Bucket=INPUT, VersioningConfiguration={"Status": "Enabled"})
    key = "incoming/late.txt"
    v1 = _sequenced(batch.upload(key, "great\n"), first)
    v2 = _sequenced(batch.upload(key, "awful\nawful\n"), second)
    assert batch.invoke(v2)["results"][0]["status"] == "done"
    newer = batch.output(key)
    via_sqs = load_event("sqs-s3.json")
    via_sqs["Records"][0]["body"] = json.dumps(v1)
    for late in (v1, via_sqs):
        result = batch.invoke(late)  # directly, then retried through SQS
        assert result.get("batchItemFailures", []) == []  # acknowledged, not retried
        assert batch.output(key) == newer == [{**newer[0]}, {**newer[1]}]
        assert [ln["label"] for ln in newer] == ["NEGATIVE", "NEGATIVE"]
    summary = batch.summary(key)
    v2_object = v2["Records"][0]["s3"]["object"]
    assert summary["source"]["version_id"] == v2_object["versionId"]
    assert summary["source"]["sequencer"] == second
    # In order (v1 first, then v2), both are classified and v2's output is the one left.
    key2 = "incoming/in-order.txt"
    w1 = _sequenced(batch.upload(key2, "great\n"), first)
    w2 = _sequenced(batch.upload(key2, "awful\n"), second)
    assert [batch.invoke(e)["results"][0]["status"] for e in (w1, w2)] == ["done", "done"]
    assert [ln["label"] for ln in batch.output(key2)] == ["NEGATIVE"]


def test_sequencers_compare_as_s3_documents() -> None:
    from handler.batch.refs import later

    assert later("0055AED6DCD90281E6", "0055AED6DCD90281E5")
    assert later("0055AED6DCD90281E5", "0055AED6DCD9")  # right-padded: ...000000 < ...0281E5
    assert later("0055aed6dcd90281e6", "0055AED6DCD90281E5")  # case does not order
    assert not later("0055AED6DCD90281E5", "0055AED6DCD90281E5")
    assert not later(None, "00") and not later("01", None) and not later("zz", "00")

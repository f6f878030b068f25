"""The distributed path's steps (plan, shard, merge) called as the state machine calls them,
against S3 in moto (in-process and server): the edge cases the big end-to-end runs do not
reach: data faults, empty objects, an object replaced before its plan, retried shards and
merges, and the part assembly around S3's 5 MiB part floor."""

from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Any

import pytest

from handler.adapters.s3_store import S3Store
from handler.batch import shards
from handler.batch.formats import detect
from handler.batch.job import Destination
from handler.batch.refs import ObjectRef
from handler.errors import MalformedEvent
from tests.adapters.conftest import INPUT, OUTPUT, Batch


def run_steps(batch: Batch, key: str, shard_records: int = 5) -> dict[str, Any]:
    """Upload-free: plan, every shard (each twice, as a retry would), merge (twice)."""
    fn = batch.function.batch
    digest = fn.model.manifest_sha256
    store = fn.store
    head = batch.client.head_object(Bucket=INPUT, Key=key)
    pinned = ObjectRef(INPUT, key, None, head["ETag"].strip('"'), head["ContentLength"])
    fmt, gz = detect(key)
    dest = Destination(OUTPUT, "predictions/")
    job = shards.make_job(pinned, fmt, gz, dest, OUTPUT, "_work/", digest, shard_records, 4)
    planned = shards.plan(job, store, digest)
    items = json.loads(
        batch.client.get_object(Bucket=OUTPUT, Key=planned["manifest"]["key"])["Body"].read()
    )
    assert len(items) == planned["shards"]
    for item in items:
        first = shards.shard(job, item, fn.model.classifier, store, digest)
        part = shards._part_key(job, item["index"], ".jsonl")
        before = batch.client.get_object(Bucket=OUTPUT, Key=part)["Body"].read()
        assert shards.shard(job, item, fn.model.classifier, store, digest) == first
        assert batch.client.get_object(Bucket=OUTPUT, Key=part)["Body"].read() == before
    merged = shards.merge(job, store, digest)
    again = shards.merge(job, store, digest)
    if merged["status"] == "done":
        assert again["status"] == "already_done"
    return merged


def single(batch: Batch, key: str) -> tuple[bytes, dict[str, Any]]:
    """The single path's output and summary for the same bytes under another key."""
    body = batch.client.get_object(Bucket=INPUT, Key=key)["Body"].read()
    other = f"single/{key}"
    result = batch.invoke(batch.upload(other, body))["results"][0]
    assert result["mode"] == "single"
    out = batch.client.get_object(Bucket=OUTPUT, Key=f"predictions/{other}.predictions.jsonl")
    return out["Body"].read(), batch.summary(other)


def distributed_output(batch: Batch, key: str) -> bytes:
    out = batch.client.get_object(Bucket=OUTPUT, Key=f"predictions/{key}.predictions.jsonl")
    return out["Body"].read()  # type: ignore[no-any-return]


def test_a_gzip_cut_short_has_the_single_paths_records_and_data_fault(batch: Batch) -> None:
    lines = "".join(json.dumps({"id": i, "text": "great fun"}) + "\n" for i in range(3000))
    whole = gzip.compress(lines.encode(), mtime=0)
    key = "in/cut.jsonl.gz"
    batch.upload(key, whole[: len(whole) * 2 // 3])
    merged = run_steps(batch, key, shard_records=500)
    expected, summary = single(batch, key)
    assert distributed_output(batch, key) == expected
    assert merged["data_fault"] == summary["data_fault"] and merged["object_incomplete"]
    assert 0 < merged["records"] == summary["records"] < 3000


@pytest.mark.parametrize("key", ["in/empty.txt", "in/empty.jsonl.gz", "in/header-only.csv"])
def test_an_object_without_records_merges_into_an_empty_output(batch: Batch, key: str) -> None:
    body = {"txt": b"", "gz": gzip.compress(b"", mtime=0), "csv": b"id,text\n"}[key.split(".")[-1]]
    batch.upload(key, body)
    merged = run_steps(batch, key)
    assert merged["status"] == "done" and merged["records"] == 0 and merged["shards"] == 0
    assert distributed_output(batch, key) == b"" == single(batch, key)[0]


def test_every_record_kind_in_txt_and_csv_matches_the_single_path(batch: Batch) -> None:
    txt = "great\n\n \nawful plot\r\n" + "x" * 30 + "\n\xff\n" * 3 + "fun"
    batch.upload("in/kinds.txt", txt.encode("utf-8", "surrogateescape"))
    batch.upload(
        "in/kinds.csv",
        b'\xef\xbb\xbfID,Text\n1,great\n2,"multi\nline awful"\n3\n4,"bad"x\n5,\n6,fun\n',
    )
    for key in ("in/kinds.txt", "in/kinds.csv"):
        merged = run_steps(batch, key, shard_records=2)
        expected, summary = single(batch, key)
        assert distributed_output(batch, key) == expected, key
        for field in ("records", "errors", "error_kinds", "classified"):
            assert merged[field] == summary[field], (key, field)


def test_an_object_replaced_before_its_plan_is_skipped_not_classified(batch: Batch) -> None:
    key = "in/replaced.txt"
    batch.upload(key, "great\n" * 10)
    fn = batch.function.batch
    digest = fn.model.manifest_sha256
    head = batch.client.head_object(Bucket=INPUT, Key=key)
    pinned = ObjectRef(INPUT, key, None, head["ETag"].strip('"'), head["ContentLength"])
    batch.upload(key, "awful\n" * 10)  # unversioned bucket: the announced bytes are gone
    dest = Destination(OUTPUT, "predictions/")
    job = shards.make_job(pinned, ".txt", False, dest, OUTPUT, "_work/", digest, 64, 64)
    planned = shards.plan(job, fn.store, digest)
    assert planned["shards"] == 0 and "changed since the event" in planned["skipped"]
    assert shards.merge(job, fn.store, digest)["status"] == "skipped"
    listed = batch.client.list_objects_v2(Bucket=OUTPUT, Prefix="predictions/")
    assert "Contents" not in listed


def test_shard_size_is_rounded_to_whole_chunks_so_batch_mates_match() -> None:
    ref = ObjectRef("b", "k.jsonl", None, "e", 10)
    job = shards.make_job(ref, ".jsonl", False, Destination("o", "p/"), "o", "w/", "m", 100, 64)
    assert job.shard_records == 128 and job.chunk_size == 64
    name = shards.execution_name(job)
    assert len(name) <= 80 and name.startswith("k-jsonl-")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    other = shards.make_job(
        dataclasses.replace(ref, etag="f"),
        ".jsonl",
        False,
        Destination("o", "p/"),
        "o",
        "w/",
        "m",
        100,
        64,
    )
    assert other.id != job.id  # another version of the object is another job


PATTERNS = [
    [300, 200, 100],  # all small: read and joined (one PUT: under the floor in all)
    [1200, 1100, 50],  # big parts copied inside S3, the small last one joined
    [100, 1500, 100, 100, 1200, 30],  # a small run takes its big neighbour to reach the floor
    [0, 1100, 0, 0],  # empty parts take no part
]


@pytest.mark.parametrize("sizes", PATTERNS)
def test_assemble_copies_big_parts_and_joins_small_ones_at_s3s_floor(
    batch: Batch, monkeypatch: pytest.MonkeyPatch, sizes: list[int]
) -> None:
    """S3 refuses a multipart upload whose parts (but the last) are under its floor; moto
    enforces the same rule, here with the floor lowered to 1 KiB for both sides."""
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)
    store = S3Store(batch.client)
    parts = []
    expected = b""
    for i, size in enumerate(sizes):
        body = bytes([65 + i]) * size
        batch.client.put_object(Bucket=OUTPUT, Key=f"_work/t/{i}", Body=body)
        parts.append((OUTPUT, f"_work/t/{i}", size))
        expected += body
    counts = store.assemble(OUTPUT, "assembled.jsonl", parts, "text/plain", min_part=1024)
    assert batch.client.get_object(Bucket=OUTPUT, Key="assembled.jsonl")["Body"].read() == expected
    assert counts["copied"] + counts["joined"] == sum(1 for s in sizes if s)
    # A part is copied when nothing is waiting to be joined and it reaches the floor itself.
    assert counts["copied"] == {0: 0, 1: 2, 2: 0, 3: 1}[PATTERNS.index(sizes)]


def test_a_job_travels_as_json_and_comes_back_the_same() -> None:
    ref = ObjectRef("in", "dir/k.jsonl", "v1", "e", 10)
    job = shards.make_job(ref, ".jsonl", True, Destination("o", "p/"), "w", "_w/", None, 10, 4)
    carried = json.loads(json.dumps(job.to_json()))  # what Step Functions hands the next step
    assert carried["source"] == {
        "bucket": "in",
        "key": "dir/k.jsonl",
        "version_id": "v1",
        "etag": "e",
        "size": 10,
        "sequencer": None,
        "long_text": None,
    }
    assert (carried["long_text"], carried["max_windows"]) == ("truncate", None)
    assert carried["work"] == {"bucket": "w", "prefix": f"_w/{job.id}/"}
    assert shards.Job.from_json(carried, "shard") == job


@pytest.mark.parametrize(
    ("job", "says"),
    [
        (None, "without a job from the plan"),
        ({"work": {}, "source": {}}, "job lacks id, format"),
        ("not a job", "without a job from the plan"),
    ],
)
def test_a_step_with_a_broken_job_is_refused_by_name(job: Any, says: str) -> None:
    with pytest.raises(MalformedEvent, match=says):
        shards.Job.from_json(job, "merge")


def test_a_job_with_a_wrong_nested_field_is_refused() -> None:
    ref = ObjectRef("in", "k.jsonl", None, "e", 10)
    data = shards.make_job(ref, ".jsonl", False, Destination("o", ""), "w", "_w/", None, 8, 4)
    broken = {**data.to_json(), "work": {"bucket": "w"}}
    with pytest.raises(MalformedEvent, match="job is malformed"):
        shards.Job.from_json(broken, "plan")


RESUMABLE = {
    "slow.jsonl": "".join(
        json.dumps({"id": i, "text": ["great fun", "awful", "", "dull plot", 7][i % 5]}) + "\n"
        for i in range(43)
    ).encode(),
    "slow.txt": b"".join(b"great movie\r\n" if i % 3 else b"awful\n" for i in range(41)),
    "slow.csv.gz": gzip.compress(
        ("id,text\n" + "".join(f'{i},"good, very ""fun"""\n' for i in range(38))).encode()
    ),
}


@pytest.mark.parametrize("key", sorted(RESUMABLE))
def test_a_hand_off_out_of_time_continues_after_the_last_record_written(
    batch: Batch, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """The lines an invocation wrote before its time ran out go with the hand-off: the plan's
    shards start after them, the merge publishes them first, and the output is the single
    path's, byte for byte; no record is classified twice."""
    from tests.adapters.conftest import RunningOut, with_state_machine

    arn = with_state_machine(batch, monkeypatch, shard_records=8)
    body = RESUMABLE[key]
    event = batch.upload(key, body)
    expected, single_summary = single(batch, key)
    handed = batch.invoke(event, RunningOut(asks=3))["results"][0]
    assert handed["status"] == "distributed" and handed["why"] == "time", handed
    done = handed["records_done"]
    assert done > 0 and done % batch.settings.batch_chunk_size == 0
    import boto3

    endpoint = batch.client.meta.endpoint_url
    kwargs = {} if "amazonaws.com" in endpoint else {"endpoint_url": endpoint}
    client = boto3.client("stepfunctions", region_name="us-east-1", **kwargs)
    execution = client.describe_execution(executionArn=handed["execution"])
    assert execution["executionArn"].startswith(arn.replace(":stateMachine:", ":execution:"))
    job = shards.Job.from_json(json.loads(execution["input"])["job"], "plan")
    assert job.done_records == done and job.resume is not None

    fn = batch.function.batch
    digest = fn.model.manifest_sha256
    planned = shards.plan(job, fn.store, digest)
    items = json.loads(
        batch.client.get_object(Bucket=OUTPUT, Key=planned["manifest"]["key"])["Body"].read()
    )
    assert items and items[0]["first_record"] == done + 1
    classified = [shards.shard(job, item, fn.model.classifier, fn.store, digest) for item in items]
    assert sum(c["records"] for c in classified) == single_summary["records"] - done
    merged = shards.merge(job, fn.store, digest)
    assert merged["status"] == "done" and merged["resumed_after"] == done
    assert distributed_output(batch, key) == expected
    for field in ("records", "classified", "errors", "error_kinds", "truncated", "low_confidence"):
        assert merged[field] == single_summary[field], field
    left = batch.client.list_objects_v2(Bucket=OUTPUT, Prefix="_work/").get("Contents", [])
    assert left == []  # the head part is swept with the rest of the work files

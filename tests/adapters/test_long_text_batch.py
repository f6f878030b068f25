"""`long_text` in S3 batch: the function's LONG_TEXT, an object's own `long-text` metadata over
it, the per-text window cap (MAX_WINDOWS_PER_TEXT), the summary's count of windowed texts, and
the distributed path reading every shard the same way."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from handler.batch import shards
from handler.batch.formats import detect
from handler.batch.job import Destination, LongTexts
from handler.batch.refs import ObjectRef
from tests.adapters.conftest import INPUT, OUTPUT, Batch, s3_event

LONG = "good great fun loved best " * 6 + "awful dull worst boring terrible " * 30
SHORT = ["good", "awful plot", "i loved the movie", "dull"]
CONTENT = "".join(
    json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate([*SHORT, LONG, *SHORT, LONG])
)


def _set(batch: Batch, **changes: Any) -> None:
    batch.function.batch.settings = dataclasses.replace(batch.settings, **changes)


def _upload_with_metadata(batch: Batch, key: str, metadata: dict[str, str]) -> dict[str, Any]:
    batch.client.put_object(Bucket=INPUT, Key=key, Body=CONTENT.encode(), Metadata=metadata)
    head = batch.client.head_object(Bucket=INPUT, Key=key)
    return s3_event(key, head["ETag"].strip('"'), head.get("VersionId"))


def test_windows_read_long_records_whole_and_the_summary_counts_them(batch: Batch) -> None:
    batch.invoke(batch.upload("incoming/truncate.jsonl", CONTENT))
    truncated = batch.output("incoming/truncate.jsonl")
    _set(batch, long_text="windows")
    batch.invoke(batch.upload("incoming/windows.jsonl", CONTENT))
    windowed = batch.output("incoming/windows.jsonl")
    assert len(windowed) == len(truncated) == 10
    for before, after in zip(truncated, windowed, strict=True):
        if before["id"] in (4, 9):  # the long texts: read whole, their end decides
            assert before["truncated"] and before["label"] == "POSITIVE"
            assert after["windows"] > 1 and not after["truncated"]
            assert after["label"] == "NEGATIVE"
        else:  # texts that fit: the same line, bit for bit
            assert after == before
    summary = batch.summary("incoming/windows.jsonl")
    assert summary["long_text"] == "windows" and summary["windowed"] == 2
    assert batch.summary("incoming/truncate.jsonl")["windowed"] == 0


def test_an_objects_metadata_chooses_for_it(batch: Batch) -> None:
    batch.invoke(_upload_with_metadata(batch, "incoming/asked.jsonl", {"long-text": "Windows"}))
    assert batch.summary("incoming/asked.jsonl")["long_text"] == "windows"
    assert batch.output("incoming/asked.jsonl")[4]["windows"] > 1
    _set(batch, long_text="windows")
    batch.invoke(_upload_with_metadata(batch, "incoming/kept.jsonl", {"long-text": "truncate"}))
    assert batch.summary("incoming/kept.jsonl")["long_text"] == "truncate"


def test_metadata_that_names_no_mode_is_a_data_fault_naming_it(batch: Batch) -> None:
    result = batch.invoke(_upload_with_metadata(batch, "incoming/odd.jsonl", {"long-text": "all"}))
    assert result["results"][0]["status"] == "done"
    summary = batch.summary("incoming/odd.jsonl")
    assert summary["object_incomplete"] and summary["classified"] == 0
    assert "long-text='all'" in summary["data_fault"]["error"]
    assert batch.output("incoming/odd.jsonl") == []


def test_the_window_cap_truncates_a_text_to_it_and_flags_it(batch: Batch) -> None:
    _set(batch, long_text="windows", max_windows_per_text=2)
    batch.invoke(batch.upload("incoming/capped.jsonl", CONTENT))
    line = batch.output("incoming/capped.jsonl")[4]
    assert line["windows"] == 2 and line["truncated"]


def test_the_distributed_path_reads_every_shard_the_same_way(batch: Batch) -> None:
    _set(batch, long_text="windows")
    key = "incoming/big.jsonl"
    batch.upload(key, CONTENT * 3)
    batch.invoke(batch.upload(f"single/{key}", CONTENT * 3))
    expected = batch.client.get_object(
        Bucket=OUTPUT, Key=f"predictions/single/{key}.predictions.jsonl"
    )["Body"].read()
    fn = batch.function.batch
    digest = fn.model.manifest_sha256
    head = batch.client.head_object(Bucket=INPUT, Key=key)
    pinned = ObjectRef(INPUT, key, None, head["ETag"].strip('"'), head["ContentLength"])
    fmt, gz = detect(key)
    how = LongTexts("windows", fn.settings.max_windows_per_text)
    job = shards.make_job(
        pinned,
        fmt,
        gz,
        Destination(OUTPUT, "predictions/"),
        OUTPUT,
        "_work/",
        digest,
        8,
        4,
        how=how,
    )
    carried = shards.Job.from_json(json.loads(json.dumps(job.to_json())), "shard")
    assert carried.long_text == "windows"
    planned = shards.plan(carried, fn.store, digest)
    items = json.loads(
        batch.client.get_object(Bucket=OUTPUT, Key=planned["manifest"]["key"])["Body"].read()
    )
    for item in items:
        shards.shard(carried, item, fn.model.classifier, fn.store, digest)
    merged = shards.merge(carried, fn.store, digest)
    assert merged["long_text"] == "windows" and merged["windowed"] == 6
    out = batch.client.get_object(Bucket=OUTPUT, Key=f"predictions/{key}.predictions.jsonl")
    assert out["Body"].read() == expected


@pytest.mark.parametrize("value", ["windows", "WINDOWS", "truncate"])
def test_the_setting_is_read_from_the_environment(value: str) -> None:
    from handler.config import Settings

    assert Settings.from_env({"LONG_TEXT": value}).long_text == value.lower()


def test_a_setting_that_names_no_mode_is_refused() -> None:
    from handler.config import Settings
    from handler.errors import ConfigError
    from handler.inference import long_text

    modes = ", ".join(long_text.LONG_TEXT_MODES)  # the settings take exactly the core's modes
    with pytest.raises(ConfigError, match=f"LONG_TEXT must be one of {modes}, got 'chunks'"):
        Settings.from_env({"LONG_TEXT": "chunks"})
    for mode in long_text.LONG_TEXT_MODES:
        assert Settings.from_env({"LONG_TEXT": mode}).long_text == mode

"""The CLI as a user works with it: its output contract, the default model folder, failing fast
without the hub, build progress, and `invoke --current-etag` on a generated S3 event."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.compiler import hub, progress
from handler.compiler.fetch import fetch
from handler.config import LOCAL_MODEL_DIR, default_model_dir
from handler.errors import BuildError
from handler.local.invoke import FAILURE_REASONS, current_objects
from tests import tiny
from tests.conftest import EVENTS

ROOT = Path(__file__).resolve().parent.parent


def _cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # No proxies: these commands talk to 127.0.0.1 only, and the hub probe is skipped behind one.
    dropped = ("MODEL_DIR", "LAMBDA_TASK_ROOT", "HF_HUB_OFFLINE")
    base = {
        k: v for k, v in os.environ.items() if k not in dropped and not k.lower().endswith("_proxy")
    }
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "handler", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, **(env or {})},
    )


# --- the default model folder ---------------------------------------------------------------


def test_default_model_folder_is_build_model_locally_and_the_task_root_on_lambda() -> None:
    assert default_model_dir({})[0] == Path(LOCAL_MODEL_DIR)
    assert default_model_dir({"LAMBDA_TASK_ROOT": "/var/task"})[0] == Path("/var/task/model")
    assert default_model_dir({"MODEL_DIR": "/m", "LAMBDA_TASK_ROOT": "/x"})[0] == Path("/m")


def test_commands_find_build_model_without_flags(tiny_model: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "build" / "model")
    out = _cli("classify", "great fun", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["label"] == "POSITIVE"
    assert json.loads(_cli("verify", cwd=tmp_path).stdout)["ok"] is True
    inv = _cli("invoke", "--event", str(EVENTS / "apigw-http-classify.json"), cwd=tmp_path)
    assert inv.returncode == 0, inv.stderr
    assert json.loads(inv.stdout)["statusCode"] == 200


@pytest.mark.parametrize(
    "args",
    [
        ("classify", "great fun"),
        ("eval", "--data", __file__),  # a file that exists: the model is what is missing
        ("verify",),
        ("invoke", "--event", str(EVENTS / "apigw-http-classify.json")),
    ],
)
def test_a_missing_model_names_model_dir_and_the_build_command(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "MODEL_DIR" in out.stderr and "python -m handler build" in out.stderr
    assert str(tmp_path / "build" / "model") in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


# --- stdout carries the result only ----------------------------------------------------------


def test_invoke_stdout_is_the_response_and_metrics_go_to_stderr(tiny_model: Path) -> None:
    out = _cli(
        "invoke",
        "--event",
        str(EVENTS / "apigw-http-classify.json"),
        env={"MODEL_DIR": str(tiny_model), "POWERTOOLS_LOG_LEVEL": "DEBUG"},
    )
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout)  # the whole of stdout is one JSON document
    assert response["statusCode"] == 200
    assert '"_aws"' in out.stderr and '"level":"DEBUG"' in out.stderr.replace(" ", "")
    assert '"_aws"' not in out.stdout


def test_classify_and_eval_stdout_are_json_only(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny.write_eval(tmp_path / "eval.tsv")
    env = {"MODEL_DIR": str(tiny_model)}
    for args in (("classify", "great fun", "awful plot"), ("eval", "--data", str(data))):
        out = _cli(*args, env=env)
        assert out.returncode == 0, out.stderr
        json.loads(out.stdout)


def test_sqs_failure_reason_is_in_invoke_output(tiny_model: Path) -> None:
    """OUTPUT_BUCKET unset: the message fails, and the output says why, not only a log line."""
    out = _cli(
        "invoke",
        "--event",
        str(EVENTS / "sqs-s3.json"),
        env={"MODEL_DIR": str(tiny_model), "OUTPUT_BUCKET": ""},
    )
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed
    reasons = response[FAILURE_REASONS]
    assert {r.get("message_id") for r in reasons} == set(failed)
    assert any("OUTPUT_BUCKET" in r.get("error", "") for r in reasons)


# --- invoke --current-etag -------------------------------------------------------------------


def test_current_objects_rewrites_every_wrapping() -> None:
    heads: list[tuple[str, str]] = []

    def head(bucket: str, key: str) -> dict[str, Any] | None:
        heads.append((bucket, key))
        return None if key == "gone.txt" else {"etag": "abc", "size": 7}

    s3 = json.loads((EVENTS / "s3-put.json").read_text())
    out = current_objects(s3, head)
    assert out["Records"][0]["s3"]["object"]["eTag"] == "abc"
    assert out["Records"][0]["s3"]["object"]["size"] == 7
    assert s3["Records"][0]["s3"]["object"]["eTag"] != "abc"  # the input is not modified
    sqs = current_objects(json.loads((EVENTS / "sqs-s3.json").read_text()), head)
    body = json.loads(sqs["Records"][0]["body"])
    assert body["Records"][0]["s3"]["object"]["eTag"] == "abc"
    assert heads[-1] == ("classifier-input", "incoming/my reviews été.jsonl")  # URL-decoded
    sns = current_objects(json.loads((EVENTS / "sns-s3.json").read_text()), head)
    msg = json.loads(sns["Records"][0]["Sns"]["Message"])
    assert msg["Records"][0]["s3"]["object"]["eTag"] == "abc"
    eb = current_objects(json.loads((EVENTS / "eventbridge-s3.json").read_text()), head)
    assert eb["detail"]["object"]["etag"] == "abc"
    missing = json.loads((EVENTS / "s3-put.json").read_text())
    missing["Records"][0]["s3"]["object"]["key"] = "gone.txt"
    assert current_objects(missing, head) == missing  # no such object: left as it is


def test_current_objects_heads_the_key_each_event_shape_means() -> None:
    """One parser (handler/batch/refs.py) for the function and the tool: a notification's key is
    form-encoded, an EventBridge key is as sent, so 'c++ notes.txt' is headed as such from both."""
    heads: list[str] = []

    def head(bucket: str, key: str) -> dict[str, Any] | None:
        heads.append(key)
        return {"etag": "abc", "size": 7}

    s3 = json.loads((EVENTS / "s3-put.json").read_text())
    s3["Records"][0]["s3"]["object"]["key"] = "c%2B%2B+notes.txt"
    eb = json.loads((EVENTS / "eventbridge-s3.json").read_text())
    eb["detail"]["object"]["key"] = "c++ notes.txt"
    eb["detail"]["object"]["version-id"] = "v1"
    out = current_objects(eb, head)
    current_objects(s3, head)
    assert heads == ["c++ notes.txt", "c++ notes.txt"]
    assert "version-id" not in out["detail"]["object"]  # a fresh upload's event names no version


def test_invoke_current_etag_runs_a_generated_event(
    tiny_model: Path, tmp_path: Path, moto_server: str
) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    for bucket in ("gen-in", "gen-out"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="gen-in", Key="up/reviews.txt", Body=b"great fun\nawful plot\n")
    event = json.loads((EVENTS / "s3-put.json").read_text())
    rec = event["Records"][0]["s3"]
    rec["bucket"]["name"], rec["object"]["key"] = "gen-in", "up/reviews.txt"
    rec["object"]["eTag"] = "0123456789abcdef0123456789abcdef"  # made up, as SAM's generator does
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    env = {
        "MODEL_DIR": str(tiny_model),
        "AWS_ENDPOINT_URL_S3": moto_server,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "INPUT_BUCKET": "gen-in",
        "OUTPUT_BUCKET": "gen-out",
    }
    stale = json.loads(_cli("invoke", "--event", str(path), env=env).stdout)
    assert stale["results"][0]["status"] == "skipped"
    assert "changed" in stale["results"][0]["reason"]
    fresh = _cli("invoke", "--event", str(path), "--current-etag", env=env)
    assert fresh.returncode == 0, fresh.stderr
    result = json.loads(fresh.stdout)["results"][0]
    assert result["status"] == "done" and result["complete"] is True, result
    lines = s3.get_object(Bucket="gen-out", Key=result["output"]["key"])["Body"].read().splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["POSITIVE", "NEGATIVE"]


# --- the hub: once, fast ---------------------------------------------------------------------


def test_probe_names_an_unreachable_endpoint() -> None:
    reason = hub.probe("http://127.0.0.1:9", timeout=1)
    assert reason is not None and "127.0.0.1:9" in reason


def test_offline_fetch_uses_the_cache_only_and_says_why(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def download(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        from huggingface_hub.errors import LocalEntryNotFoundError

        raise LocalEntryNotFoundError("not cached")

    with pytest.raises(BuildError, match="HF_HUB_OFFLINE is set; not in the local cache"):
        fetch("org/model", snapshot_download=download, offline="HF_HUB_OFFLINE is set")
    assert calls and all(c.get("local_files_only") is True for c in calls)


def test_build_without_hub_fails_once_without_retries(tmp_path: Path) -> None:
    folder = tiny.make_hub_folder(tmp_path / "hub")
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    out = _cli("build", "--model", str(folder), "--out", str(tmp_path / "o"), env=env)
    assert out.returncode == 2
    assert "pass --eval FILE" in out.stderr and "127.0.0.1:9 is unreachable" in out.stderr
    assert "Retry" not in out.stderr and out.stderr.count("error:") == 1
    assert not (tmp_path / "o").exists()
    offline = _cli(
        "build",
        "--model",
        "org/x",
        "--out",
        str(tmp_path / "o"),
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr


# --- progress --------------------------------------------------------------------------------


def test_progress_is_quiet_off_a_terminal_and_can_be_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROGRESS", raising=False)
    assert progress.enabled() is False  # pytest's streams are not terminals
    monkeypatch.setenv("PROGRESS", "1")
    assert progress.enabled() is True


def test_forced_progress_goes_to_stderr_and_stdout_stays_json(tmp_path: Path) -> None:
    folder = tiny.make_hub_folder(tmp_path / "hub")
    data = tiny.write_eval(tmp_path / "eval.tsv")
    out = _cli(
        "build",
        "--model",
        str(folder),
        "--eval",
        str(data),
        "--target",
        "x86-vnni",
        "--out",
        str(tmp_path / "o"),
        env={"PROGRESS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["target"] == "x86-vnni"
    assert "build:" in out.stderr and "stage" in out.stderr and "verify on" in out.stderr
    quiet = _cli("build", "--model", str(folder), "--eval", str(data), "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0 and "stage" not in quiet.stderr


# --- a custom domain's base path -------------------------------------------------------------


def test_custom_domain_event_404_says_to_set_api_base_path(tiny_model: Path) -> None:
    from handler.local.context import LocalContext
    from tests.api.helpers import make_handler
    from tests.conftest import load_event

    event = load_event("apigw-rest-custom-domain.json")
    missing = make_handler(tiny_model)(event, LocalContext())
    assert missing["statusCode"] == 404
    assert "API_BASE_PATH=/sentiment" in json.loads(missing["body"])["error"]
    served = make_handler(tiny_model, api_base_path="/sentiment")(event, LocalContext())
    assert served["statusCode"] == 200
    unknown = dict(event, path="/nothing/here")
    body = json.loads(make_handler(tiny_model)(unknown, LocalContext())["body"])
    assert "no route" in body["error"] and "API_BASE_PATH" not in body["error"]


def test_s3_head_is_none_for_a_missing_object(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    from handler.local.invoke import s3_head

    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="head-test")
        s3.put_object(Bucket="head-test", Key="here.txt", Body=b"great fun\n")
        head = s3_head(s3)
        assert head("head-test", "gone.txt") is None
        found = head("head-test", "here.txt")
        assert found is not None and found["size"] == 10 and '"' not in found["etag"]

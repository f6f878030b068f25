"""python -m handler classify | eval | verify | serve, as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import tiny


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handler", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_classify_prints_pipeline_json(tiny_model: Path) -> None:
    out = _run("classify", "--model", str(tiny_model), "great fun", "awful plot")
    assert out.returncode == 0, out.stderr
    assert [d["label"] for d in json.loads(out.stdout)] == ["POSITIVE", "NEGATIVE"]
    one = _run("classify", "--model", str(tiny_model), "--top-k", "all", "great fun")
    assert [d["label"] for d in json.loads(one.stdout)] == ["POSITIVE", "NEGATIVE"]


def test_classify_reads_long_texts_in_windows_when_asked(tiny_model: Path) -> None:
    text = "good great fun loved best " * 6 + "awful dull worst boring terrible " * 30
    default = _run("classify", "--model", str(tiny_model), text)
    windows = _run("classify", "--model", str(tiny_model), "--long-text", "windows", text)
    assert default.returncode == 0 and windows.returncode == 0, windows.stderr
    assert json.loads(default.stdout)[0]["label"] == "POSITIVE"  # the first 32 tokens
    assert json.loads(windows.stdout)[0]["label"] == "NEGATIVE"  # the whole text
    bad = _run("classify", "--model", str(tiny_model), "--long-text", "chunks", text)
    assert bad.returncode == 2 and "--long-text" in bad.stderr


def test_classify_takes_text_pairs(tiny_model: Path) -> None:
    one = _run("classify", "--model", str(tiny_model), "good plot", "--text-pair", "awful and dull")
    assert one.returncode == 0, one.stderr
    answer = json.loads(one.stdout)
    assert isinstance(answer, dict) and set(answer) == {"label", "score"}  # as the pipeline
    many = _run("classify", "--model", str(tiny_model), "--pairs", "good\tbad", "dull\tfun")
    assert many.returncode == 0 and len(json.loads(many.stdout)) == 2
    assert json.loads(many.stdout)[0] != answer
    bad = _run("classify", "--model", str(tiny_model), "--pairs", "no tab here")
    assert bad.returncode == 2 and "no tab" in bad.stderr


def test_classify_reports_bad_input(tiny_model: Path) -> None:
    out = _run("classify", "--model", str(tiny_model), "   ")
    assert out.returncode == 2 and "empty" in out.stderr


def test_eval_prints_accuracy_and_n(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny.write_eval(tmp_path / "eval.tsv")
    out = _run("eval", "--model", str(tiny_model), "--data", str(data))
    result = json.loads(out.stdout)
    assert result["n"] == 32 and result["accuracy"] == 1.0
    assert set(result["per_label"]) == {"NEGATIVE", "POSITIVE"}


def test_eval_names_a_bad_line(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood\t1\nbad\tmaybe\n")
    out = _run("eval", "--model", str(tiny_model), "--data", str(bad))
    assert out.returncode == 2 and "bad.tsv:3" in out.stderr


def test_verify_accepts_the_artifact(tiny_model: Path) -> None:
    out = _run("verify", "--model", str(tiny_model))
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


def test_serve_runs_the_same_app_on_uvicorn(tiny_model: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "handler", "serve", "--port", str(port)],
        env={**os.environ, "MODEL_DIR": str(tiny_model)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        req = urllib.request.Request(
            f"{url}/classify", data=b'{"inputs": "great fun"}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())[0]["label"] == "POSITIVE"
        bad = urllib.request.Request(f"{url}/classify", data=b'{"inputs": 5}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 422
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""Hub and local sources, tested without the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.compiler.fetch import ONNX_FILE, fetch
from handler.errors import BuildError
from tests import tiny


class FakeHub:
    """Plays huggingface_hub.snapshot_download: a snapshot folder named after a commit."""

    def __init__(self, root: Path, with_onnx: bool) -> None:
        self.calls: list[dict[str, Any]] = []
        self.folder = tiny.make_hub_folder(root / "snapshots" / ("a" * 40))
        if not with_onnx:
            (self.folder / ONNX_FILE).unlink()

    def __call__(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({"repo_id": repo_id, **kwargs})
        return str(self.folder)


def test_local_folder_is_used_as_is(tmp_path: Path) -> None:
    folder = tiny.make_hub_folder(tmp_path / "m")
    src = fetch(str(folder))
    assert src.kind == "local" and src.folder == folder.resolve() and src.onnx_path is not None
    assert src.model == "local:m"  # no build-machine path in the manifest


def test_hub_prefers_published_onnx_and_records_the_commit(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path, with_onnx=True)
    src = fetch("org/model", revision="v1", snapshot_download=hub)
    assert src.kind == "hub" and src.revision == "a" * 40 and src.onnx_path is not None
    assert len(hub.calls) == 1
    call = hub.calls[0]
    assert call["repo_id"] == "org/model" and call["revision"] == "v1"
    assert ONNX_FILE in call["allow_patterns"]
    assert "model.safetensors" not in call["allow_patterns"]


def test_hub_without_onnx_fetches_weights(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path, with_onnx=False)
    src = fetch("org/model", snapshot_download=hub)
    assert src.onnx_path is None
    assert len(hub.calls) == 2 and "model.safetensors" in hub.calls[1]["allow_patterns"]


def test_not_a_folder_nor_an_id(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a folder"):
        fetch(str(tmp_path / "missing" / "dir" / "x"))


def test_offline_build_says_how_to_pass_a_folder(tmp_path: Path) -> None:
    """The real huggingface_hub code, pointed at a closed port with an empty cache."""
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_ETAG_TIMEOUT": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "handler",
            "build",
            "--model",
            "org/some-model",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert "cannot fetch 'org/some-model'" in out.stderr and "--model PATH" in out.stderr
    assert not (tmp_path / "o").exists()

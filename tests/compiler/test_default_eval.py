"""Without --eval, the build verifies on GLUE SST-2 validation from the hub (here: a stand-in
parquet served by a fake hf_hub_download), and says how to pass a file when that fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from handler.compiler import inputs
from handler.compiler.pipeline import BuildOptions, build
from handler.errors import BuildError
from tests import tiny


def test_default_eval_comes_from_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import huggingface_hub
    import pyarrow as pa

    rows = [
        line.split("\t")
        for line in tiny.write_eval(tmp_path / "e.tsv").read_text().splitlines()[1:]
    ]
    parquet = tmp_path / "validation.parquet"
    labels = [1 if lab in ("1", "POSITIVE") else 0 for _, lab in rows]
    pq.write_table(pa.table({"sentence": [s for s, _ in rows], "label": labels}), parquet)
    calls: list[tuple[Any, ...]] = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append((repo_id, filename, kwargs.get("repo_type"), kwargs.get("revision")))
        return str(parquet)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    hub = tiny.make_hub_folder(tmp_path / "hub")
    manifest = build(BuildOptions(model=str(hub), target="x86-vnni", out=tmp_path / "out"))
    assert calls == [(*inputs.DEFAULT_EVAL, "dataset", inputs.DEFAULT_EVAL_REVISION)]
    assert len(inputs.DEFAULT_EVAL_REVISION) == 40  # a commit, not a branch that moves
    verification = manifest["verification"]
    assert verification["n"] + verification["selection"]["n"] == len(rows)
    source = manifest["verification"]["eval_source"]
    assert source.startswith(f"hf://datasets/nyu-mll/glue@{inputs.DEFAULT_EVAL_REVISION}/")


def test_no_eval_and_no_hub_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def offline(*args: Any, **kwargs: Any) -> str:
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    hub = tiny.make_hub_folder(tmp_path / "hub")
    with pytest.raises(BuildError, match="pass --eval FILE"):
        build(BuildOptions(model=str(hub), target="x86-vnni", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()

"""Shared fixtures: the tiny self-made model (always there) and the stand-in (if present)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.compiler.pipeline import BuildOptions, build
from tests import tiny

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
# The stand-in for distilbert-base-uncased-finetuned-sst-2-english and its labelled data.
STANDIN_MODEL = Path(
    os.environ.get("STANDIN_MODEL_DIR", ROOT.parent / "shared/models/distilbert-mini-sst2")
)
STANDIN_DATA = Path(
    os.environ.get("STANDIN_EVAL_TSV", ROOT.parent / "shared/data/sst2-validation-a.tsv")
)


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def build_tiny(tmp: Path, target: str = "x86-vnni", **hub_kwargs: Any) -> Path:
    hub = tiny.make_hub_folder(tmp / "hub", **hub_kwargs)
    out = tmp / f"model-{target}"
    build(
        BuildOptions(
            model=str(hub),
            target=target,
            out=out,
            eval_path=tiny.write_eval(tmp / "eval.tsv", hub_kwargs.get("labels")),
        )
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built int8 artifact of the tiny model (per-token int8, padded batches)."""
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-fp32"), target="none")


@pytest.fixture(scope="session")
def standin_dir() -> Path:
    if not (STANDIN_MODEL / "config.json").is_file():
        pytest.skip(f"stand-in model not found at {STANDIN_MODEL} (set STANDIN_MODEL_DIR)")
    return STANDIN_MODEL


@pytest.fixture(scope="session")
def standin_data() -> Path:
    if not STANDIN_DATA.is_file():
        pytest.skip(f"stand-in eval data not found at {STANDIN_DATA} (set STANDIN_EVAL_TSV)")
    return STANDIN_DATA


@pytest.fixture(scope="session")
def standin_built(
    tmp_path_factory: pytest.TempPathFactory, standin_dir: Path, standin_data: Path
) -> Path:
    """The stand-in built for this machine's default target, once per session."""
    out = tmp_path_factory.mktemp("standin") / "model"
    build(BuildOptions(model=str(standin_dir), target="x86-avx2", out=out, eval_path=standin_data))
    return out


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in (
        "MODEL_DIR",
        "NUM_THREADS",
        "OUTPUT_BUCKET",
        "OUTPUT_PREFIX",
        "INPUT_BUCKET",
        "INPUT_PREFIX",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "MAX_TEXTS",
        "MAX_REQUEST_TOKENS",
        "MIN_SCORE",
    ):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (S3 and the rest), for code that talks HTTP to AWS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()

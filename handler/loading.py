"""get_model(): the model, built once per execution environment and reused while warm."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.config import Settings, missing_model_message
from handler.errors import ArtifactError
from handler.inference import Classifier
from handler.inference.classifier import RUNTIME_CONFIG
from handler.manifest import MANIFEST


@dataclass(frozen=True)
class LoadedModel:
    classifier: Classifier
    manifest: dict[str, Any]
    manifest_sha256: str | None
    load_seconds: float

    @property
    def model_id(self) -> str:
        source = self.manifest.get("source", {})
        return str(source.get("model", "unknown"))


def _check_sizes(folder: Path, manifest: dict[str, Any]) -> None:
    """Cheap at cold start: each file's size against the manifest (catches truncated copies).
    Full sha256 checking is `python -m handler verify DIR`, run at build and image time."""
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: {name} listed in the manifest is missing")
        if path.stat().st_size != meta["bytes"]:
            raise ArtifactError(
                f"{folder}: {name} is {path.stat().st_size} bytes, manifest says {meta['bytes']}"
            )


def load_model(model_dir: Path, threads: int) -> LoadedModel:
    start = time.perf_counter()
    manifest_path = model_dir / MANIFEST
    manifest: dict[str, Any] = {}
    digest = None
    if manifest_path.is_file():
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
        digest = hashlib.sha256(raw).hexdigest()
        _check_sizes(model_dir, manifest)
    classifier = Classifier.from_dir(model_dir, threads=threads)
    return LoadedModel(classifier, manifest, digest, time.perf_counter() - start)


@functools.cache
def get_model(model_dir: Path, threads: int) -> LoadedModel:
    """Cached per (folder, threads): one session per execution environment."""
    return load_model(model_dir, threads)


def model_for(settings: Settings) -> LoadedModel:
    """The configured model; a folder that holds none is an error naming where it was looked for
    (MODEL_DIR or the default) and how to build one."""
    folder = settings.model_dir
    if not (folder / RUNTIME_CONFIG).is_file():
        raise ArtifactError(missing_model_message(folder, settings.model_dir_origin))
    return get_model(folder, settings.num_threads)

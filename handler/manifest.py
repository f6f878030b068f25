"""manifest.json: what was built, from what, with checksums and the verification figures.

Shared by the compiler, which writes it, and the runtime, which reads and checks it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from handler.errors import ArtifactError

MANIFEST = "manifest.json"
TOOLS = ("onnxruntime", "onnx", "tokenizers", "numpy", "huggingface-hub", "torch", "transformers")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    import importlib.metadata  # only the compiler asks; the runtime never pays for the import

    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def write(folder: Path, content: dict[str, Any]) -> dict[str, Any]:
    manifest = {**content, "files": file_table(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check_files(folder: Path) -> dict[str, Any]:
    """Every file listed in the manifest exists with its recorded sha256; nothing else is there."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}")
    manifest: dict[str, Any] = json.loads(path.read_text())
    problems = []
    for name, meta in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} missing")
        elif sha256(file) != meta["sha256"]:
            problems.append(f"{name} sha256 differs from the manifest")
    extra = set(file_table(folder)) - set(manifest["files"])
    problems += [f"{name} not in the manifest" for name in sorted(extra)]
    if problems:
        raise ArtifactError(f"{folder}: " + "; ".join(problems))
    return manifest

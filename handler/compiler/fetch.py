"""A hub model id or a local folder in the hub's layout -> a local folder to build from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from handler.errors import BuildError

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
# What the build reads from a repository; weights only when there is no published ONNX export.
METADATA_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
ONNX_FILE = "onnx/model.onnx"
WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]


class SnapshotDownload(Protocol):
    def __call__(self, repo_id: str, **kwargs: Any) -> str: ...


@dataclass(frozen=True)
class Source:
    """Where a build's inputs came from."""

    folder: Path
    model: str
    kind: str  # "local" or "hub"
    revision: str | None  # the commit a hub snapshot resolved to

    @property
    def onnx_path(self) -> Path | None:
        path = self.folder / ONNX_FILE
        return path if path.is_file() else None


def _offline_error(model: str, exc: BaseException, offline: str | None) -> BuildError:
    why = f"{offline}; not in the local cache" if offline else f"{type(exc).__name__}: {exc}"
    return BuildError(
        f"cannot fetch {model!r} from the Hugging Face Hub ({why}). "
        "Offline? Pass a local folder in the hub's layout instead: --model PATH "
        "(config.json, tokenizer.json and onnx/model.onnx or model.safetensors)."
    )


def fetch(
    model: str,
    revision: str | None = None,
    snapshot_download: SnapshotDownload | None = None,
    need_weights: bool = False,
    offline: str | None = None,
) -> Source:
    """Resolve `model` to a local folder: an existing directory as is, else a hub snapshot.

    From the hub it takes the metadata and the published onnx/model.onnx first; the PyTorch
    weights are fetched only when the repository publishes no ONNX export. `offline` (a reason,
    default: `hub.offline_reason()`, asked once) limits the hub to the local cache.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        # Named by its folder, not its path: the manifest (and /health) should not carry the
        # build machine's directory layout.
        folder = local.resolve()
        return Source(folder=folder, model=f"local:{folder.name}", kind="local", revision=None)
    if local.suffix or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise BuildError(f"--model {model!r} is not a folder, nor a hub model id")
    download: Any = snapshot_download
    if download is None:
        from huggingface_hub import snapshot_download as download

        from handler.compiler.hub import offline_reason

        offline = offline_reason()
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [*METADATA_FILES, ONNX_FILE, *(WEIGHT_FILES if need_weights else [])]
    cache_only = {"local_files_only": True} if offline else {}
    try:
        folder = Path(download(model, revision=revision, allow_patterns=patterns, **cache_only))
        if not (folder / ONNX_FILE).is_file() and not need_weights:
            folder = Path(
                download(
                    model,
                    revision=revision,
                    allow_patterns=[*METADATA_FILES, *WEIGHT_FILES],
                    **cache_only,
                )
            )
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise BuildError(f"no model {model!r} at revision {revision or 'main'} on the hub") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise _offline_error(model, exc, offline) from exc
    if not (folder / "config.json").is_file():
        raise BuildError(f"{model!r} has no config.json: not a transformers model repository")
    # A snapshot folder is named after the commit it holds: record it, not the branch name.
    return Source(folder=folder, model=model, kind="hub", revision=folder.name)

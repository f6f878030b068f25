"""What the build reads besides the graph: the model's runtime config (labels, max length, padding)
from the source folder, and the labelled text it verifies on (a file, or SST-2 from the hub)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handler.compiler.fetch import Source
from handler.datafiles import Labelled, read_labelled
from handler.errors import BuildError
from handler.inference.classifier import ModelConfig
from handler.inference.postprocess import SINGLE_LABEL

# Without --eval: the GLUE SST-2 validation split, the split the model card's accuracy is on,
# at a pinned revision of the dataset repository (the same bytes for every build).
DEFAULT_EVAL = ("nyu-mll/glue", "sst2/validation-00000-of-00001.parquet")


DEFAULT_EVAL_REVISION = "4c50f6d2c71ecad30a90f5da22d5392673f3ab05"


MAX_SANE_LENGTH = 1_000_000  # tokenizer_config's "no limit" is 1e30


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# Models whose position ids start after the padding index (RoBERTa's embeddings): of
# max_position_embeddings, pad_token_id + 1 are never a real token's position.
POSITION_OFFSET_MODEL_TYPES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "data2vec-text",
        "longformer",
        "ibert",
        "roberta-prelayernorm",
        "luke",
        "markuplm",
    }
)


def usable_max_length(
    hf_config: dict[str, Any], tok_config: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """The longest input the model takes, and where it came from: the tokenizer's
    model_max_length when given, the positions the embeddings really have (max_position_embeddings
    less RoBERTa-style models' padding offset), the smaller of the two."""
    positions = hf_config.get("max_position_embeddings")
    offset = 0
    if hf_config.get("model_type") in POSITION_OFFSET_MODEL_TYPES:
        offset = int(hf_config.get("pad_token_id", 1)) + 1
    sources: dict[str, Any] = {
        "model_max_length": tok_config.get("model_max_length"),
        "max_position_embeddings": positions,
        "position_offset": offset,
    }
    limits = []
    raw = tok_config.get("model_max_length")
    if isinstance(raw, int | float) and 0 < raw < MAX_SANE_LENGTH:
        limits.append(int(raw))
    if isinstance(positions, int | float) and 0 < positions < MAX_SANE_LENGTH:
        limits.append(int(positions) - offset)
    if not limits:
        raise BuildError("neither tokenizer_config.json nor config.json gives a max length")
    if min(limits) < 3:
        raise BuildError(f"the usable max length is {min(limits)} tokens ({sources}): too short")
    sources["usable"] = min(limits)
    return min(limits), sources


def model_config(source: Source) -> tuple[ModelConfig, dict[str, Any], dict[str, Any]]:
    """The runtime's slice of config.json and tokenizer_config.json; config.json; where the max
    length came from."""
    hf_config = _read_json(source.folder / "config.json")
    tok_config = _read_json(source.folder / "tokenizer_config.json")
    id2label = hf_config.get("id2label")
    if not id2label:
        n = int(hf_config.get("num_labels", 2))
        id2label = {str(i): f"LABEL_{i}" for i in range(n)}
    max_length, length_from = usable_max_length(hf_config, tok_config)
    tokenizer_file = source.folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise BuildError(f"{source.model} has no tokenizer.json (a fast tokenizer is required)")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    pad_token = tok_config.get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    pad_id = tok.token_to_id(pad_token) if isinstance(pad_token, str) else None
    if pad_id is None:
        pad_id = int(hf_config.get("pad_token_id") or 0)
    config = ModelConfig(
        id2label={int(k): str(v) for k, v in id2label.items()},
        problem_type=hf_config.get("problem_type"),
        max_length=max_length,
        pad_token_id=pad_id,
    )
    return config, hf_config, length_from


def load_eval(
    path: Path | None, id2label: dict[int, str], workdir: Path, task: str = SINGLE_LABEL
) -> tuple[Labelled, str]:
    if path is not None:
        return read_labelled(path, id2label, task), str(path)
    if task != SINGLE_LABEL:
        raise BuildError(
            f"no verification data for a {task} model: pass --eval FILE (text<TAB>target; "
            "regression: a number, multi-label: labels separated by commas)"
        )
    from handler.compiler.hub import offline_reason

    offline = offline_reason()
    try:
        import pyarrow.parquet as pq
        from huggingface_hub import hf_hub_download

        parquet = hf_hub_download(
            DEFAULT_EVAL[0],
            DEFAULT_EVAL[1],
            repo_type="dataset",
            revision=DEFAULT_EVAL_REVISION,
            local_files_only=bool(offline),
        )
        table = pq.read_table(parquet).to_pydict()
    except Exception as exc:  # any failure here means: no default data, ask for a file
        why = f"{offline}; not in the local cache" if offline else f"{type(exc).__name__}: {exc}"
        raise BuildError(
            "no verification data: pass --eval FILE (text<TAB>label). The default, GLUE SST-2 "
            f"validation from the hub, could not be read ({why})"
        ) from exc
    tsv = workdir / "sst2-validation.tsv"
    tsv.write_text(
        "".join(
            f"{s.strip()}\t{lab}\n"
            for s, lab in zip(table["sentence"], table["label"], strict=True)
        )
    )
    repo, name = DEFAULT_EVAL
    return read_labelled(tsv, id2label), f"hf://datasets/{repo}@{DEFAULT_EVAL_REVISION}/{name}"

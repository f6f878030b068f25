"""PyTorch weights -> fp32 ONNX, for repositories that publish no onnx/model.onnx.

torch and transformers are imported here only, lazily: `pip install '.[torch]'`.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

from handler.errors import BuildError

OPSET = 17


def describe(folder: Path) -> str:
    """'model_type (Architecture)' from config.json, for error messages."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "the model"
    arch = ", ".join(config.get("architectures") or [])
    return f"model type {config.get('model_type', '?')!r}" + (f" ({arch})" if arch else "")


def input_names(model: Any) -> list[str]:
    """The inputs the model uses. token_type_ids only where its forward takes them and there is
    more than one token type: RoBERTa-family models (type_vocab_size 1) and DeBERTa-v2 (0) have
    a single implicit segment, and DistilBERT takes none."""
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask") if n in accepted]
    if "token_type_ids" in accepted and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


def example_inputs(model: Any, names: list[str]) -> dict[str, Any]:
    """Inputs to trace with: ordinary (non-special) token ids, a full mask, segment 0."""
    import torch

    vocab = int(model.config.vocab_size)
    low = min(5, vocab - 1)
    ids = low + torch.arange(16, dtype=torch.long).reshape(2, 8) % max(vocab - low, 1)
    values = {
        "input_ids": ids,
        "attention_mask": torch.ones((2, 8), dtype=torch.long),
        "token_type_ids": torch.zeros((2, 8), dtype=torch.long),
    }
    return {n: values[n] for n in names}


def export_onnx(folder: Path, out: Path) -> list[str]:
    """Export a sequence classifier with dynamic batch and sequence axes; returns its inputs."""
    try:
        import torch
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:
        raise BuildError(
            f"{folder} publishes no onnx/model.onnx and exporting one needs torch and "
            "transformers: pip install '.[torch]'"
        ) from exc
    what = describe(folder)
    try:
        # A local folder, already fetched at its pinned revision (fetch.py): nothing is
        # downloaded here, so there is no revision to pin (bandit B615 reads any from_pretrained).
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))  # nosec B615
        model.eval()
        names = input_names(model)
        example = example_inputs(model, names)
        axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
        axes["logits"] = {0: "batch_size"}
        out.parent.mkdir(parents=True, exist_ok=True)
        # The TorchScript exporter (dynamo=False): it needs no onnxscript, takes dynamic_axes,
        # and its graphs are the ones ORT's transformer fusions were written against. It warns
        # that it is legacy; that is a choice here, not news.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # also TracerWarnings about Python-side shape checks
            torch.onnx.export(
                model,
                (),
                str(out),
                kwargs=example,
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(
            f"cannot export {what} from {folder.name} to ONNX: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return names

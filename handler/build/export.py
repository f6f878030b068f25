"""PyTorch weights -> fp32 ONNX, for repositories that publish no onnx/model.onnx.

torch and transformers are imported here only, lazily: `pip install '.[torch]'`.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from handler.errors import BuildError

OPSET = 17


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
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    model.eval()
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    example = {n: torch.ones((2, 8), dtype=torch.long) for n in names}
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    out.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter (dynamo=False): it needs no onnxscript, takes dynamic_axes, and its
    # graphs are the ones ORT's transformer fusions were written against. It warns that it is
    # legacy; that is a choice here, not news.
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
    return names

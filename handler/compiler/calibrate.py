"""What the fp32 graph's GEMMs see on calibration text: per-channel maxima and second moments of
every input of a MatMul with a constant weight, the statistics smoothing and error-compensating
weight rounding are computed from (handler/compiler/per_token.py).

Each text runs on its own, so every row is a real token (no padding in the statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handler.inference.tokenizer import TextInput, TextTokenizer


@dataclass
class InputStats:
    """One GEMM input over the calibration tokens."""

    absmax: np.ndarray[Any, Any]  # [K] largest |x| per channel (every row)
    gram: np.ndarray[Any, Any]  # [K, K] sum of x^T x over the sampled rows (float64)
    rows: int = 0  # rows in `gram`
    maximum: np.ndarray[Any, Any] | None = None  # [K] per channel, every row
    minimum: np.ndarray[Any, Any] | None = None
    total: np.ndarray[Any, Any] | None = None  # [K] sum of x over every row (float64)
    count: int = 0  # rows in `total`
    sampled_total: np.ndarray[Any, Any] | None = None  # [K] sum of x over the sampled rows

    @property
    def hessian(self) -> np.ndarray[Any, Any]:
        """The mean of x^T x: the curvature of a GEMM's squared output error in its weights."""
        return self.gram / max(self.rows, 1)

    @property
    def mean(self) -> np.ndarray[Any, Any]:
        if self.total is None:
            return np.zeros_like(self.absmax)
        return self.total / max(self.count, 1)

    def centred_absmax(self, offset: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The largest |x - offset| per channel."""
        if self.maximum is None or self.minimum is None:
            return np.asarray(self.absmax + np.abs(offset))
        return np.asarray(np.maximum(self.maximum - offset, offset - self.minimum))

    def centred_hessian(self, offset: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The mean of (x - offset)^T (x - offset) over the sampled rows."""
        n = max(self.rows, 1)
        m = self.sampled_total / n if self.sampled_total is not None else self.mean
        c = offset.astype(np.float64)
        return self.gram / n - np.outer(m, c) - np.outer(c, m) + np.outer(c, c)


@dataclass
class Calibration:
    inputs: dict[str, InputStats] = field(default_factory=dict)
    texts: int = 0
    tokens: int = 0

    def describe(self) -> dict[str, Any]:
        return {"texts": self.texts, "tokens": self.tokens, "gemm_inputs": len(self.inputs)}


FLUSH_ROWS = 2048
# Second moments from every `stride`-th row, so that about this many texts' tokens feed them
# (GPTQ needs the inputs' correlations, not every token); the channel maxima see every row.
GRAM_TEXTS = 1200


def gemm_inputs(model: Any) -> list[str]:
    """Inputs of MatMuls with a constant 2-D float weight: the tensors the rewrite quantises."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if len(w.dims) == 2 and w.data_type == TensorProto.FLOAT:
            seen.setdefault(node.input[0], None)
    return list(seen)


def collect(graph: Path, tokenizer: TextTokenizer, texts: Sequence[TextInput]) -> Calibration:
    """Run `graph` (fp32) on each text alone and accumulate its GEMM inputs' statistics."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(graph))
    names = gemm_inputs(model)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    # No graph optimisation: fusions could remove the tensors asked for.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    calib = Calibration()
    pending: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in names}
    stride = max(1, -(-len(texts) // GRAM_TEXTS))

    def flush() -> None:
        for name, parts in pending.items():
            if not parts:
                continue
            x = np.concatenate(parts)
            parts.clear()
            stats = calib.inputs.get(name)
            if stats is None:
                k = x.shape[1]
                stats = calib.inputs[name] = InputStats(
                    np.zeros(k),
                    np.zeros((k, k)),
                    maximum=np.full(k, -np.inf),
                    minimum=np.full(k, np.inf),
                    total=np.zeros(k),
                    sampled_total=np.zeros(k),
                )
            assert stats.maximum is not None and stats.minimum is not None
            assert stats.total is not None and stats.sampled_total is not None
            np.maximum(stats.absmax, np.abs(x).max(axis=0), out=stats.absmax)
            np.maximum(stats.maximum, x.max(axis=0), out=stats.maximum)
            np.minimum(stats.minimum, x.min(axis=0), out=stats.minimum)
            stats.total += x.sum(axis=0, dtype=np.float64)
            stats.count += x.shape[0]
            sample = x[::stride]
            stats.gram += (sample.T @ sample).astype(np.float64)  # a float32 GEMM
            stats.sampled_total += sample.sum(axis=0, dtype=np.float64)
            stats.rows += sample.shape[0]

    rows = 0
    for enc in tokenizer.encode(texts):
        values = session.run(names, tokenizer.pad([enc], input_names))
        calib.texts += 1
        calib.tokens += enc.length
        for name, value in zip(names, values, strict=True):
            pending[name].append(np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1]))
        rows += enc.length
        if rows >= FLUSH_ROWS:
            flush()
            rows = 0
    flush()
    return calib

"""fp32 ONNX -> fused, int8-quantised (for a named CPU target), offline-optimised ONNX."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """How to quantise for one CPU family.

    Dynamic quantisation feeds uint8 activations and int8 weights (u8s8). On x86-64 without
    VNNI, MLAS multiplies them with VPMADDUBSW, whose int16 pair sums can saturate and wreck
    accuracy (onnxruntime#5849, #14642). `reduce_range` stores 7-bit weights so the sums fit.
    With VNNI (VPDPBUSD, 32-bit accumulation) or on arm64 (SDOT/UDOT) full-range int8 is safe.
    """

    name: str
    description: str
    quantize: bool
    reduce_range: bool = False
    # Per-channel weight scales: measured on the stand-in, agreement with fp32 rose from
    # 93.6% to 98.6% (x86-avx2) and 97.0% to 98.9% (x86-vnni) at the same speed.
    per_channel: bool = True


TARGETS: dict[str, Target] = {
    "x86-vnni": Target(
        "x86-vnni", "x86-64 with AVX-512 VNNI or AVX-VNNI (u8s8, full range)", quantize=True
    ),
    "x86-avx2": Target(
        "x86-avx2",
        "x86-64 with AVX2 and no VNNI (u8s8, 7-bit weights: no VPMADDUBSW saturation)",
        quantize=True,
        reduce_range=True,
    ),
    "arm64": Target("arm64", "arm64 / Graviton (u8s8 via SDOT/UDOT, full range)", quantize=True),
    "none": Target("none", "fp32, no quantisation", quantize=False, per_channel=False),
}
ALIASES = {
    "vnni": "x86-vnni",
    "avx512-vnni": "x86-vnni",
    "avx-vnni": "x86-vnni",
    "avx2": "x86-avx2",
    "aarch64": "arm64",
    "graviton": "arm64",
    "fp32": "none",
}
# Lambda's x86 fleet does not guarantee VNNI: the default must be safe on every x86-64 CPU.
DEFAULT_TARGET = "x86-avx2"


def get_target(name: str) -> Target:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TARGETS:
        raise ValueError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[key]


def fuse_transformer(src: Path, dst: Path, model_config: dict[str, Any]) -> dict[str, int]:
    """ORT's transformer fusions (SkipLayerNorm, BiasGelu, Attention where it matches).

    Fused ops are onnxruntime contrib ops that run on every CPU, so the graph stays portable.
    Returns the fused operator counts; an unsupported architecture is copied unfused.
    """
    from onnxruntime.transformers import optimizer

    heads = model_config.get("n_heads") or model_config.get("num_attention_heads") or 0
    hidden = model_config.get("dim") or model_config.get("hidden_size") or 0
    try:
        opt = optimizer.optimize_model(
            str(src), model_type="bert", num_heads=int(heads), hidden_size=int(hidden), opt_level=0
        )
    except Exception as exc:  # fusion is an optimisation: an unknown graph builds unfused
        log.warning("transformer fusion skipped: %r", exc)
        dst.write_bytes(src.read_bytes())
        return {}
    opt.save_model_to_file(str(dst))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}
# Recipes tried in order until one passes the gate: all MatMuls first, then the same with the
# feed-forward output projections kept in fp32. Their inputs are post-GELU activations whose
# outliers spend most of a uint8 range (measured: agreement 98.6% -> 99.1%, at ~30% speed).
RECIPES = ("all", "keep_ffn_output_fp32")


def sensitive_nodes(path: Path) -> list[str]:
    """MatMuls fed by a GELU (fused op, or the Erf/Tanh formula within two steps)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def gelu_like(name: str, depth: int = 0) -> bool:
        node = producer.get(name)
        if node is None or depth > 2:
            return False
        if node.op_type in GELU_OPS or node.op_type in {"Erf", "Tanh"}:
            return True
        return node.op_type == "Mul" and any(gelu_like(i, depth + 1) for i in node.input)

    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(gelu_like(i) for i in node.input)
    ]


class _NoPreprocessHint(logging.Filter):
    """quantize_dynamic logs a hint about static-quantisation pre-processing on the root logger
    at every call; it does not apply to dynamic quantisation of a fused graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize(src: Path, dst: Path, target: Target, recipe: str = "all") -> dict[str, Any]:
    """Dynamic int8: weights quantised once, activation scales computed per run."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = sensitive_nodes(src) if recipe == "keep_ffn_output_fp32" else []
    hint = _NoPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=target.per_channel,
            reduce_range=target.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # ONNX shape inference cannot type the outputs of ORT's fused contrib ops (BiasGelu,
            # SkipLayerNormalization); everything in these graphs is float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(hint)
    return {
        "method": "dynamic",
        "activation_type": "uint8",
        "weight_type": "int8",
        "reduce_range": target.reduce_range,
        "per_channel": target.per_channel,
        "recipe": recipe,
        "nodes_kept_fp32": len(excluded),
    }


def optimize_offline(src: Path, dst: Path) -> None:
    """Save ORT's extended-level optimised graph so the runtime can load it with optimisation off.

    Extended (not "all") keeps the graph free of layout transforms tied to this build machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])

"""fp32 ONNX -> fused, int8-quantised (for a named CPU target), offline-optimised ONNX."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """How to quantise for one CPU family: the per-token recipes the build may choose from.

    Every recipe feeds uint8 activations and int8 weights (u8s8). On x86-64 without VNNI, MLAS
    multiplies them with VPMADDUBSW, whose int16 pair sums saturate (onnxruntime#5849, #14642)
    unless 2 * max(u8) * max(|s8|) <= 32767: the default target offers only recipes that fit.
    With VNNI (VPDPBUSD, 32-bit sums) or on arm64 (SDOT/UDOT) full-range int8 is exact.
    """

    name: str
    description: str
    recipes: tuple[str, ...]  # per_token.RECIPES names, tried on the selection split

    @property
    def quantize(self) -> bool:
        return bool(self.recipes)


TARGETS: dict[str, Target] = {
    "x86-avx2": Target(
        "x86-avx2",
        "any x86-64, VNNI or not (AVX2-safe recipes only: no VPMADDUBSW saturation)",
        # w7a8 with the calibrated refinements (per_token.Refinements, balanced): on 5,500
        # out-of-domain selection texts, 64 flips and score-difference p99 0.043, against
        # 79 / 0.053 for "mixed" and 78 / 0.058 for w8a7 (docs/building.md, Fidelity).
        recipes=("w7a8",),
    ),
    "x86-vnni": Target(
        "x86-vnni",
        "x86-64 with AVX-512 VNNI or AVX-VNNI (full-range int8 allowed)",
        recipes=("w8a8", "w7a8"),
    ),
    "arm64": Target(
        "arm64", "arm64 / Graviton (SDOT/UDOT: full-range int8 allowed)", ("w8a8", "w7a8")
    ),
    "none": Target("none", "fp32, no quantisation", recipes=()),
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
# Lambda's x86 fleet does not guarantee VNNI: the default must be exact on every x86-64 CPU.
DEFAULT_TARGET = "x86-avx2"


def get_target(name: str) -> Target:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TARGETS:
        raise ValueError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[key]


def fuse_transformer(
    src: Path, dst: Path, model_config: dict[str, Any], skip_layer_norm: bool = False
) -> dict[str, int]:
    """ORT's transformer fusions: LayerNorm and BiasGelu.

    Fused ops are onnxruntime contrib ops that run on every CPU, so the graph stays portable.
    SkipLayerNormalization is left out by default: onnxruntime's CPU kernel took 5x as long as
    Add + Add + LayerNormalization on the same rows (973 vs 193 us for 400 x 384, 1 thread).
    Attention is not fused for the MatMuls to stay visible to the per-token rewrite.
    Returns the fused operator counts; an unsupported architecture is copied unfused.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    heads = model_config.get("n_heads") or model_config.get("num_attention_heads") or 0
    hidden = model_config.get("dim") or model_config.get("hidden_size") or 0
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    options.enable_attention = False
    try:
        opt = optimizer.optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(heads),
            hidden_size=int(hidden),
            opt_level=0,
            optimization_options=options,
        )
    except Exception as exc:  # fusion is an optimisation: an unknown graph builds unfused
        log.warning("transformer fusion skipped: %r", exc)
        dst.write_bytes(src.read_bytes())
        return {}
    opt.save_model_to_file(str(dst))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


class _NoPreprocessHint(logging.Filter):
    """quantize_dynamic logs a hint about static-quantisation pre-processing on the root logger
    at every call; it does not apply to dynamic quantisation of a fused graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_per_tensor(src: Path, dst: Path, reduce_range: bool = True) -> dict[str, Any]:
    """The previous recipe, kept as the benchmarks' baseline: onnxruntime dynamic int8, one
    activation scale per input tensor (padding and batch-mates included), per-channel weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _NoPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            # ONNX shape inference cannot type the outputs of ORT's fused contrib ops.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(hint)
    return {"method": "per_tensor_dynamic", "per_channel": True, "reduce_range": reduce_range}


def optimize_offline(src: Path, dst: Path) -> None:
    """Save ORT's extended-level optimised graph so the runtime can load it with optimisation off.

    Extended (not "all") keeps the graph free of layout transforms tied to this build machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(
        str(src),
        sess_options=opts,
        providers=["CPUExecutionProvider"],
        # Would undo fuse_transformer's choice (see there).
        disabled_optimizers=["SkipLayerNormFusion"],
    )


WEIGHTS_SUFFIX = ".data"


def save_for_loading(src: Path, dst: Path) -> list[Path]:
    """`src` as the artifact's graph: `dst` holds the graph, `dst` + ".data" its weights.

    With the weights outside the protobuf, onnxruntime maps them from the file instead of parsing
    and copying them out of one 20-250 MB message: session creation took 41 ms instead of 90 for
    the stand-in (python bench/cold_start.py). Nothing else changes (optimisation off: the same
    graph).
    Returns the files written.
    """
    import onnxruntime as ort

    weights = dst.with_name(dst.name + WEIGHTS_SUFFIX)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", weights.name
    )
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return [dst, weights] if weights.is_file() else [dst]


def host_saturates() -> bool:
    """Whether this CPU's u8s8 GEMM saturates int16 pair sums (x86-64 without VNNI).

    One MatMulInteger of [255, 255] by [127, 127]: exact is 64770, VPMADDUBSW gives 32767.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "saturation_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [numpy_helper.from_array(np.full((2, 1), 127, dtype=np.int8), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    out = sess.run(None, {"a": np.full((1, 2), 255, dtype=np.uint8)})[0]
    return int(out[0, 0]) != 255 * 127 * 2

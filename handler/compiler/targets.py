"""What a build can be asked for: CPU targets, per-token recipes (bit widths) and fidelity levels
(refinements). The CLI takes its choices and defaults from here.

- A **target** names a CPU family and the recipes the build may choose from for it.
- A **recipe** gives each kind of GEMM input its activation and weight ranges.
- A **fidelity** level (`Refinements`) says what calibration-driven refinements the rewrite
  applies on top of the recipe.

Saturation: x86-64 without VNNI multiplies u8 by s8 with VPMADDUBSW, which adds two products in
int16 with saturation (onnxruntime#5849, #14642). A recipe is AVX2-safe when
2 * max(u8) * max(|s8|) <= 32767: 7-bit activations (u8 <= 127) with full-range weights, or
8-bit activations with 7-bit weights (|s8| <= 63). With VNNI (VPDPBUSD, 32-bit sums) or on arm64
(SDOT/UDOT) full-range int8 is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handler.compiler.graph import GELU_MIN

INT16_MAX = 32767


@dataclass(frozen=True)
class Bits:
    """One kind of GEMM input: the largest quantised activation and the weights' range."""

    max_u8: int  # 255 (8-bit activations) or 127 (7-bit)
    weight_qmax: int  # 127 (full-range int8) or 63 (7-bit)

    @property
    def zero_point(self) -> int:
        """Symmetric activations: zero in the middle of 0..max_u8."""
        return (self.max_u8 + 1) // 2

    @property
    def symmetric_qmax(self) -> int:
        return self.max_u8 - self.zero_point

    @property
    def avx2_safe(self) -> bool:
        """No int16 pair sum of u8*s8 products can saturate (VPMADDUBSW without VNNI)."""
        return 2 * self.max_u8 * self.weight_qmax <= INT16_MAX


@dataclass(frozen=True)
class PerTokenRecipe:
    """Bit widths for the GEMMs on GELU outputs (shifted, unsigned), on normalised inputs
    (LayerNorm outputs: Q, K, V and the first FFN GEMM) and on any other input (attention
    output projections)."""

    name: str
    symmetric: Bits
    gelu: Bits
    norm: Bits | None = None  # None: as `symmetric`

    def bits_for(self, kind: str) -> Bits:
        if kind == "gelu":
            return self.gelu
        if kind == "norm" and self.norm is not None:
            return self.norm
        return self.symmetric

    @property
    def avx2_safe(self) -> bool:
        return all(b.avx2_safe for b in (self.symmetric, self.gelu, self.norm) if b is not None)

    @property
    def full_norm_weights(self) -> bool:
        """Whether the LayerNorm-output GEMMs have 8-bit weights (`w8a8`: x86-vnni, arm64), not
        the AVX2-safe 7-bit ones: the split applies there, `ffn_apart` elsewhere (`Refinements`)."""
        return self.bits_for("norm").weight_qmax >= FULL.weight_qmax

    def describe(self) -> dict[str, Any]:
        def gemms(kind: str) -> str:
            b = self.bits_for(kind)
            act = (
                f"0..{b.max_u8} after a +{GELU_MIN} shift"
                if kind == "gelu"
                else f"+-{b.symmetric_qmax} around {b.zero_point}"
            )
            return f"activations uint8 {act}, one scale per token; weights int8 +-{b.weight_qmax}"

        return {
            "method": "per_token",
            "recipe": self.name,
            "gemms_on_layernorm_outputs": gemms("norm"),
            "gemms_on_gelu_outputs": gemms("gelu"),
            "other_gemms": gemms("other"),
            "avx2_safe": self.avx2_safe,
        }


FULL, A7, W7 = Bits(255, 127), Bits(127, 127), Bits(255, 63)
RECIPES: dict[str, PerTokenRecipe] = {
    # Full range: exact only where u8*s8 products are summed in 32 bits (VNNI, arm64 SDOT).
    "w8a8": PerTokenRecipe("w8a8", symmetric=FULL, gelu=FULL),
    # AVX2-safe variants. "mixed": 8-bit activations where LayerNorm outputs carry outlier
    # channels, 7-bit elsewhere (chosen on SST-2 half a: mean score difference from fp32 0.0059
    # vs 0.0066 for w7a8 and 0.0074 for w8a7).
    "mixed": PerTokenRecipe("mixed", symmetric=A7, gelu=A7, norm=W7),
    "w8a7": PerTokenRecipe("w8a7", symmetric=A7, gelu=A7),
    "w7a8": PerTokenRecipe("w7a8", symmetric=W7, gelu=W7),
    "w7a8-gelu-w8a7": PerTokenRecipe("w7a8-gelu-w8a7", symmetric=W7, gelu=A7),
    "w8a7-gelu-w7a8": PerTokenRecipe("w8a7-gelu-w7a8", symmetric=A7, gelu=W7),
}


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
    recipes: tuple[str, ...]  # RECIPES names, tried on the selection split

    @property
    def quantize(self) -> bool:
        return bool(self.recipes)


TARGETS: dict[str, Target] = {
    "x86-avx2": Target(
        "x86-avx2",
        "any x86-64, VNNI or not (AVX2-safe recipes only: no VPMADDUBSW saturation)",
        # w7a8 with the calibrated refinements (Refinements, balanced): on 5,500
        # out-of-domain selection texts, 64 flips and score-difference p99 0.043, against
        # 79 / 0.053 for "mixed" and 78 / 0.058 for w8a7
        # (docs/decisions/2026-11-30-fidelity-refinements.md).
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


@dataclass(frozen=True)
class Refinements:
    """What the rewrite does beyond plain per-token rounding when it has calibration statistics
    (handler/compiler/calibrate.py). Every refinement but `tanh_gelu` is exact in fp32 and
    moves only where int8 rounding falls; all are per row or constant, so rows stay
    independent. Why each is on, and at what setting: docs/decisions/ (the fidelity records).

    - `gptq`: weights rounded row by row, each row's error compensated in the rows not yet
      rounded, against the input's second moments (GPTQ). Free at run time (weights.py).
    - `smooth_alpha`: SmoothQuant on LayerNorm outputs where `rotate` does not apply: x / s
      into the quantiser, s into the weight rows (planning.py, weights.py).
    - `apart`, `apart_kinds`: the inputs' `apart` largest channels (by |x|) are left out of the
      row's scale and multiplied in fp32. On GELU outputs the quantiser's shift sends them far
      below 0, so they round to 0 (emit.py).
    - `centre`: LayerNorm and attention outputs centred on their calibration means, the means
      times the weights added back through the consumers' biases; no node added
      (patterns.layernorm_shift, patterns.value_projection, per_token's offsets stage).
    - `attention_alpha`: SmoothQuant on attention outputs, folded into the value projection's
      columns. No node at all.
    - `split`: on smoothed LayerNorm outputs with 8-bit weights, the channel whose largest
      value most exceeds the others' leaves the input and m copies f_j x are appended (the
      weight gets m rows W / (m f_j)), so that it no longer sets the row's scale alone.
    - `ffn_apart`: with the AVX2-safe 7-bit weights, the LayerNorm outputs that feed the
      feed-forward block keep this many channels in fp32 (where `rotate` does not apply).
    - `rotate`: LayerNorm outputs multiplied block by block (`rotate` channels per block) by an
      orthonormal Hadamard matrix before they are quantised, their GEMMs' weight rows by its
      transpose: (x R)(R^T W) = x W. A row's large values spread over their block, so the
      value that sets its scale comes down. Replaces smoothing, `split` and `ffn_apart` where
      it applies (planning.plan_input, emit.Emitter.quantise_input).
    - `tanh_gelu`: GELUs computed with the tanh approximation (onnxruntime's FastGelu); at
      most 4.7e-4 from x * Phi(x), against a quantised GELU output step of ~0.02. The fp32
      reference keeps erf (passes.to_tanh_gelu).
    """

    smooth_alpha: float | None = 0.65
    apart: int = 4
    apart_kinds: tuple[str, ...] = ("gelu",)
    gptq: bool = True
    centre: bool = True
    attention_alpha: float | None = None
    split: float | None = 3.0
    split_copies: int = 24
    ffn_apart: int = 3
    tanh_gelu: bool = True
    rotate: int | None = 64

    def describe(self, calibration: Any) -> dict[str, Any]:
        return {
            "calibration": calibration.describe(),
            "weight_rounding": "GPTQ (error-compensated)" if self.gptq else "nearest",
            "smoothing_alpha_on_layernorm_outputs": self.smooth_alpha,
            "fp32_channels_per_input": self.apart,
            "fp32_channels_on": [KIND_NAMES[k] for k in self.apart_kinds],
            "centred": ["layernorm outputs", "attention outputs"] if self.centre else [],
            "smoothing_alpha_on_attention_outputs": self.attention_alpha,
            "split_channel_on_layernorm_outputs": (
                None
                if self.split is None
                else {"copies_at_most": self.split_copies, "margin": self.split}
            ),
            "fp32_channels_on_feed_forward_inputs_with_7_bit_weights": self.ffn_apart,
            "gelu_tanh_approximation": self.tanh_gelu,
            "hadamard_rotation_on_layernorm_outputs": (
                None if not self.rotate else {"block": self.rotate}
            ),
        }


KIND_NAMES = {"norm": "layernorm outputs", "gelu": "gelu outputs", "other": "other inputs"}
FIDELITY: dict[str, Refinements] = {
    # Chosen on 5,500 out-of-domain selection texts
    # (docs/decisions/2026-11-30-fidelity-refinements.md).
    "balanced": Refinements(),
    # 16 channels apart: 40 flips of 5,500 and p99 0.031 (w7a8), 34 and 0.024 (w8a8), against
    # 44 / 0.036 and 35 / 0.026 with 4; on GELU outputs alone 4 beat 16 (64 / 0.043, 71 / 0.049).
    "high": Refinements(apart=16, apart_kinds=("norm", "gelu")),
}

DEFAULT_FIDELITY = "balanced"

REFINEMENTS = FIDELITY[DEFAULT_FIDELITY]

EMBEDDINGS = ("fp16", "int8")  # how embedding tables are stored (passes.quantise_embeddings)


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

"""Per-token int8: every MatMul with a constant weight becomes an integer GEMM whose activations
are quantised with one scale per token row.

A row's scale depends on that row alone, so padding rows and batch-mates cannot change a real
text's answer: int8 graphs run in padded batches. For each activation tensor A that feeds such
MatMuls (Q, K and V share one quantisation of their common input):

    amax = ReduceMax(Abs(A), axis=-1, keepdims)                   [rows, 1]
    A_u8 = QuantizeLinear(A, amax / qmax, zero_point[rows, 1], block_size=K)
    Y    = MatMulIntegerToFloat(A_u8, W_s8, 1/qmax, w_scale[N], zero_point) * amax

Two passes over each activation tensor (Abs, then ReduceMax; QuantizeLinear) and one Mul per
GEMM: the 1/qmax of the row scale rides in the GEMM's scalar scale. QuantizeLinear takes the
row's scale directly as one block per row (opset 21; the graph is converted to it first); its
zero-point tensor ([rows, 1]) is made once for all inputs with the same rows. Where a graph
cannot be converted, A / amax is quantised with a scalar scale instead (one more pass). Linear
layers on one input (Q, K, V) are first merged into one GEMM and a Split (exact).

GELU outputs are never below GELU's minimum (-0.17): they are shifted by +0.17 and quantised
unsigned from 0 (the whole uint range on the values that occur, one more bit of resolution than
symmetric); the shift times the weights' column sums is a constant added back after the GEMM.

Weights are symmetric int8 per output column. `MatMulIntegerToFloat` is an onnxruntime contrib
op with a kernel on every CPU; everything else is standard ONNX.

With calibration statistics (handler/compiler/calibrate.py) the rewrite also rounds weights with
error compensation (GPTQ), centres LayerNorm and attention outputs on their calibration means
(the means times the weights back through the biases), rotates LayerNorm outputs block by block
with a Hadamard matrix before quantising them, the weight rows by its transpose (or smooths
them, SmoothQuant, where the rotation does not apply), keeps each GELU output's largest
channels out of its row scale, multiplied in fp32 (`Refinements`, `FIDELITY`), and computes
GELUs with their tanh approximation (FastGelu, faster). All of it
is per row or constant, so rows stay independent; the integer ranges are the recipe's, so an
AVX2-safe recipe stays AVX2-safe.

Saturation: x86-64 without VNNI multiplies u8 by s8 with VPMADDUBSW, which adds two products in
int16 with saturation (onnxruntime#5849, #14642). A recipe is AVX2-safe when
2 * max(u8) * max(|s8|) <= 32767: 7-bit activations (u8 <= 127) with full-range weights, or
8-bit activations with 7-bit weights (|s8| <= 63).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

INT16_MAX = 32767
GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu"})
GELU_MIN = 0.1701  # min of x * Phi(x) is -0.16997; of the tanh approximation -0.17004


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


BLOCKED_OPSET = 21  # QuantizeLinear with block_size (onnxruntime >= 1.20 on CPU)


def to_blocked_opset(model: Any) -> bool:
    """Convert `model` (in place) to the default-domain opset whose QuantizeLinear takes a
    scale per row; True when it is there. Other domains (onnxruntime's contrib ops) are left
    as they are; where onnx's converter cannot convert an op, nothing changes."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= BLOCKED_OPSET:
        return opset is not None
    try:
        converted = version_converter.convert_version(model, BLOCKED_OPSET)
    except Exception:  # any op the converter does not know: keep the division pass
        return False
    kept = [
        v for v in converted.graph.value_info if v.name in {w.name for w in model.graph.value_info}
    ]
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(kept)  # the converter's inferred shapes: not ours to add
    model.CopyFrom(converted)
    return True


NORM_OPS = frozenset(
    {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"}
)


def input_kind(producer_op: str) -> str:
    """gelu (shifted, unsigned), norm (a LayerNorm output) or other."""
    if producer_op in GELU_OPS:
        return "gelu"
    return "norm" if producer_op in NORM_OPS else "other"


def _source_op(producer: dict[str, Any], name: str) -> str:
    """The op that computed `name`, looking through Slices (a row of a LayerNorm output is still
    a LayerNorm output: see handler/compiler/rows.py)."""
    node = producer.get(name)
    while node is not None and node.op_type == "Slice":
        node = producer.get(node.input[0])
    return str(getattr(node, "op_type", ""))


def quantize_weight(
    w: np.ndarray[Any, Any], qmax: int, hessian: np.ndarray[Any, Any] | None = None
) -> tuple[np.ndarray[Any, Any], Any]:
    """Symmetric per-column int8: W ~= W_q * scale[col]. With the input's second moments
    (`hessian`, [K, K]) the rows are rounded one after another, each row's rounding error
    compensated in the rows not yet rounded (GPTQ, Frantar et al. 2022): the same integers at
    run time, a smaller output error on inputs like the calibration's."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    if hessian is None:
        q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
        return q, scale
    return _gptq(w, scale, qmax, hessian), scale


GPTQ_DAMP = 0.01  # of the mean diagonal, added to the diagonal: keeps the inverse well-posed
GPTQ_BLOCK = 128
GPTQ_RETRIES = 4


def _gptq(
    w: np.ndarray[Any, Any], scale: np.ndarray[Any, Any], qmax: int, hessian: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    k = w.shape[0]
    h = np.array(hessian, dtype=np.float64)
    work = np.array(w, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    work[dead, :] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")  # largest inputs first ("act order")
    work, h = work[order], h[np.ix_(order, order)]
    h = (h + h.T) / 2
    # Upper Cholesky factor of H^-1: row i holds how rounding row i moves the later rows. Second
    # moments summed in float32 (or centred: a near-constant channel's variance is a small
    # difference of large numbers) can come out slightly indefinite: damp more until they
    # are not, else round to nearest.
    damp = GPTQ_DAMP * float(np.mean(np.diag(h)))
    for _ in range(GPTQ_RETRIES):
        try:
            u = np.linalg.cholesky(np.linalg.inv(h + damp * np.eye(k))).T
            break
        except np.linalg.LinAlgError:
            damp *= 10
    else:
        out = np.empty_like(work)
        out[order] = np.clip(np.rint(work / scale.astype(np.float64)), -qmax, qmax)
        return out.astype(np.int8)
    s = scale.astype(np.float64)
    q = np.zeros_like(work)
    for i1 in range(0, k, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, k)
        block = work[i1:i2].copy()
        errors = np.zeros_like(block)
        ub = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            row = block[i]
            qi = np.clip(np.rint(row / s), -qmax, qmax)
            q[i1 + i] = qi
            err = (row - qi * s) / ub[i, i]
            block[i:] -= np.outer(ub[i, i:], err)
            errors[i] = err
        work[i2:] -= u[i1:i2, i2:].T @ errors
    out = np.empty_like(q)
    out[order] = q
    return out.astype(np.int8)


class _Rewriter:
    def __init__(self, model: Any, recipe: PerTokenRecipe) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.model, self.recipe = model, recipe
        self.new_inits: list[Any] = []
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        # ReduceMax takes its axes as an input from opset 18 on, as an attribute before.
        if opset >= 18:
            self.axes_in, self.axes_attr = [self.const("pt/axes", np.array([-1]))], {}
        else:
            self.axes_in, self.axes_attr = [], {"axes": [-1]}
        # Opset 21's QuantizeLinear takes one scale per block of the last axis: one block per
        # row, so the row's scale goes in directly and no division pass is needed.
        self.blocked = opset >= BLOCKED_OPSET
        self.rows = _row_sources(model.graph)
        self.row_zero_points: dict[tuple[str, int], str] = {}

    def const(self, name: str, value: np.ndarray[Any, Any]) -> str:
        self.new_inits.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        domain = "com.microsoft" if op == "MatMulIntegerToFloat" else ""
        return self.helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)

    def quantise_input(
        self, src: str, tag: str, kind: str, plan: InputPlan, channels: int
    ) -> tuple[list[Any], str, str, str, str]:
        """Nodes that quantise `src` ([..., channels]) per row: (nodes, u8 tensor, row amax,
        step, zero point). The plan's divisor multiplies the input first (after GELU's shift);
        its split channel's copies are appended first (Gather, Concat)."""
        r = self.recipe.bits_for(kind)
        rows = self.rows.get(src, src)
        nodes = []
        divisor = plan.divisor
        if kind == "gelu":
            qmax, zp = r.max_u8, 0
            shift = np.array(GELU_MIN, dtype=np.float32)
            if divisor is not None and plan.smooth is None:
                # The fp32 channels (divisor 0) are shifted far below 0 instead: they round to
                # 0 and do not set the row's scale. The same Add, no masking pass.
                shift = np.where(divisor == 0, GELU_APART_SHIFT, GELU_MIN).astype(np.float32)
                divisor = None
            nodes.append(
                self.node("Add", [src, self.const(f"{tag}/shift", shift)], f"{tag}/shifted")
            )
            src = f"{tag}/shifted"
        else:
            qmax, zp = r.symmetric_qmax, r.zero_point
        if plan.split is not None:  # x, then m copies of its split channel
            channel, fractions = plan.split
            index = self.const(f"{tag}/split_index", np.full(len(fractions), channel))
            nodes += [
                self.node("Gather", [src, index], f"{tag}/split_copies", axis=-1),
                self.node("Concat", [src, f"{tag}/split_copies"], f"{tag}/split", axis=-1),
            ]
            src = f"{tag}/split"
            whole = divisor if divisor is not None else np.ones(channels, dtype=np.float32)
            divisor = np.concatenate([whole, fractions])
            channels += len(fractions)
        if divisor is not None:
            inv = self.const(f"{tag}/unsmooth", divisor.astype(np.float32))
            nodes.append(self.node("Mul", [src, inv], f"{tag}/smoothed"))
            src = f"{tag}/smoothed"
        if plan.rotation is not None:  # x R block by block: [..., K] -> [-1, K/b, b] -> back
            b = plan.rotation.shape[0]
            key = (rows, -channels)  # the input's shape, made once per rows and width
            if key not in self.row_zero_points:
                nodes.append(self.node("Shape", [src], f"{tag}/shape"))
                self.row_zero_points[key] = f"{tag}/shape"
            blocks = self.const(f"{tag}/blocks", np.array([-1, channels // b, b], np.int64))
            rot = self.const(f"{tag}/rotation", plan.rotation.astype(np.float32))
            nodes += [
                self.node("Reshape", [src, blocks], f"{tag}/blocked"),
                self.node("MatMul", [f"{tag}/blocked", rot], f"{tag}/rotated_blocks"),
                self.node(
                    "Reshape",
                    [f"{tag}/rotated_blocks", self.row_zero_points[key]],
                    f"{tag}/rotated",
                ),
            ]
            src = f"{tag}/rotated"
        if kind == "gelu":
            amax_in = src
        else:
            nodes.append(self.node("Abs", [src], f"{tag}/abs"))
            amax_in = f"{tag}/abs"
        step = self.const(f"{tag}/step", np.array(1.0 / qmax, dtype=np.float32))
        zp_name = self.const(f"{tag}/zero_point", np.array(zp, dtype=np.uint8))
        nodes.append(
            self.node(
                "ReduceMax", [amax_in, *self.axes_in], f"{tag}/amax", keepdims=1, **self.axes_attr
            )
        )
        if self.blocked:
            # scale = amax / qmax per row; the zero point as a tensor of the same shape
            # (QuantizeLinear of amax by a huge scale: 0 + the zero point, on every row).
            nodes.append(self.node("Mul", [f"{tag}/amax", step], f"{tag}/row_step"))
            row_zp = []  # none: uint8 from 0
            if zp and (rows, zp) in self.row_zero_points:  # inputs with the same rows share it
                row_zp = [self.row_zero_points[rows, zp]]
            elif zp:
                huge = self.const(f"{tag}/huge", np.array(1.0e30, dtype=np.float32))
                nodes.append(
                    self.node("QuantizeLinear", [f"{tag}/amax", huge, zp_name], f"{tag}/row_zp")
                )
                row_zp = [f"{tag}/row_zp"]
                self.row_zero_points[rows, zp] = row_zp[0]
            nodes.append(
                self.node(
                    "QuantizeLinear",
                    [src, f"{tag}/row_step", *row_zp],
                    f"{tag}/q",
                    axis=-1,
                    block_size=channels,
                )
            )
        else:
            nodes += [
                self.node("Div", [src, f"{tag}/amax"], f"{tag}/unit"),
                self.node("QuantizeLinear", [f"{tag}/unit", step, zp_name], f"{tag}/q"),
            ]
        return nodes, f"{tag}/q", f"{tag}/amax", step, zp_name

    def gemm(self, quantised: Quantised, weight: np.ndarray[Any, Any], out: str) -> list[Any]:
        """The integer GEMM of one consumer of a quantised input (its weight as in the fp32
        graph), with the plan's smoothing, fp32 channels and error-compensated rounding."""
        plan, kind = quantised.plan, quantised.kind
        bits = self.recipe.bits_for(kind)
        hessian = plan.hessian
        tag = out + "/pt"
        nodes = []
        parts = [f"{tag}/scaled"]
        if plan.apart is not None:  # the outlier channels' rows stay fp32, on the exact values
            kept = self.const(f"{tag}/w_apart", weight[plan.apart, :].astype(np.float32))
            nodes.append(self.node("MatMul", [quantised.apart, kept], f"{tag}/apart"))
            parts.append(f"{tag}/apart")
            weight = weight.copy()
            weight[plan.apart, :] = 0.0
        if plan.smooth is not None:  # x W = (x / s)(s W): s into the weight rows
            weight = weight * plan.smooth[:, None].astype(np.float32)
        if plan.split is not None:
            weight = split_weight(weight, plan)
        if plan.rotation is not None:  # (x R)(R^T W)
            full = block_rotation(plan.rotation.astype(np.float64), weight.shape[0])
            weight = (full.T @ weight.astype(np.float64)).astype(np.float32)
        wq, ws = quantize_weight(weight, bits.weight_qmax, hessian)
        inputs = [
            quantised.q,
            self.const(f"{tag}/w_int8", wq),
            quantised.step,
            self.const(f"{tag}/w_scale", ws),
            quantised.zero_point,
        ]
        nodes[:0] = [
            self.node("MatMulIntegerToFloat", inputs, f"{tag}/y"),
            self.node("Mul", [f"{tag}/y", quantised.amax], parts[0]),
        ]
        if kind == "gelu":  # (A + c) W = A W + c colsum(W): take the constant back out
            rows = wq.astype(np.float32) * ws
            if plan.smooth is not None:
                rows = rows / plan.smooth[:, None].astype(np.float32)
            parts.append(
                self.const(f"{tag}/unshift", (-GELU_MIN * rows.sum(axis=0)).astype(np.float32))
            )
        # Sum the parts, the constant last: _fold_unshift folds it into the bias Add after.
        for i in range(1, len(parts)):
            into = out if i == len(parts) - 1 else f"{tag}/sum{i}"
            nodes.append(
                self.node("Add", [parts[0] if i == 1 else f"{tag}/sum{i - 1}", parts[i]], into)
            )
        if len(parts) == 1:
            nodes[1].output[0] = out
            nodes[1].name = out
        return nodes


ROW_WISE_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Abs", "Cast", "Identity", "Relu", "Erf", "Tanh", "Sigmoid"}
    | NORM_OPS
    | GELU_OPS
    | {"Gelu"}
)


def _row_sources(graph: Any) -> dict[str, str]:
    """For each tensor, the tensor whose rows (every axis but the last) it has for certain:
    through element-wise ops whose every non-constant input has the same rows (constants of
    rank <= 1), MatMuls by a constant, Splits and Concats on the last axis, and attention
    (its query's rows); anything else (a Slice of rows, a Reshape, a graph input) starts rows
    of its own. Inputs with the same rows can share one zero-point tensor."""
    from onnx import helper

    consts = {i.name: len(i.dims) for i in graph.initializer}
    rows: dict[str, str] = {}

    def of(name: str) -> str:
        return rows.get(name, name)

    for node in graph.node:
        dynamic = [i for i in node.input if i and i not in consts]
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        source: str | None = None
        if node.op_type in ("MatMul", "MultiHeadAttention") and node.input:
            if node.op_type == "MultiHeadAttention" or node.input[1] in consts:
                source = of(node.input[0])
        elif node.op_type in ROW_WISE_OPS or (node.op_type in ("Split", "Concat") and axis == -1):
            wide = any(consts[i] > 1 for i in node.input if i in consts)
            sources = {of(i) for i in dynamic}
            if not wide and len(sources) == 1:
                source = sources.pop()
        if node.op_type == "Split" and len(dynamic) > 1:
            source = None
        for out in node.output:
            rows[out] = source if source is not None else out
    return rows


@dataclass(frozen=True)
class Refinements:
    """What the rewrite does beyond plain per-token rounding when it has calibration statistics
    (handler/compiler/calibrate.py). Each is exact in fp32 and moves only where int8 rounding
    falls; each was chosen on out-of-domain selection text (docs/building.md, "Fidelity").

    - `gptq`: weights rounded row by row, each row's rounding error compensated in the rows
      not yet rounded, against the input's second moments (GPTQ). Free at run time.
    - `smooth_alpha`: SmoothQuant on LayerNorm outputs, x / s into the quantiser, s into the
      weight rows: one multiplication over each such input. Like `split` and `ffn_apart`, only
      where `rotate` does not apply (a width that is not a multiple of its block, or None).
    - `apart`: the inputs' `apart` channels with the largest |x| (LayerNorm outputs of
      DistilBERT carry one ~13x the median) are left out of the row's scale and multiplied in
      fp32. On GELU outputs they are gathered from the GELU's output, and the Add that shifts
      it for the quantiser shifts them far below 0 (they round to 0): one Gather and a small
      fp32 GEMM. On LayerNorm outputs ("norm" in `apart_kinds`) it costs a GEMM-output-sized
      addition per GEMM: the `high` fidelity (16 channels), 15-19% of throughput, for ~15%
      fewer label flips (with the rotation; ~30% before it).
    - `centre`: LayerNorm outputs centred before quantisation, each channel's calibration mean
      c subtracted (DistilBERT's carry channels whose offset is larger than their spread), c W
      added back through the consumers' biases. The LayerNorm writes y - c itself (beta - c)
      and the residual Add gets c back from the bias of the sublayer output it adds: no node
      added. Only where a LayerNormalization with a constant beta computes the input, its
      other readers are such residual Adds, and every consumer GEMM has a constant bias.
      Attention outputs are centred too, for nothing: softmax weights sum to 1, so c taken
      off the value projection's bias is c taken off the attention's output.
    - `attention_alpha`: SmoothQuant on attention outputs, folded into the value projection's
      columns (per-column weight scales: its integers do not change). No node at all.
    - `split`: on smoothed LayerNorm outputs, the channel whose largest value most exceeds the
      others' is split. DistilBERT's channel 99 is ~28 in the [CLS] row of every text, where
      the other channels are ~1: it alone sets that row's scale, and the row that attention
      reads everywhere and the classifier reads last is quantised 4x coarser than the others.
      The channel leaves the input and m copies f_j x are appended, each at most 1/`split` of
      the next channel's largest value, the f_j spread over an octave so that the copies round
      on different grids; the weight gets m rows W / (m f_j). Exact in fp32; the integer GEMM
      is m rows deeper (m <= `split_copies`), plus a Gather and a Concat over the input. Only
      where those GEMMs have 8-bit weights (`w8a8`: x86-vnni, arm64): with the AVX2-safe
      7-bit weights, whose rounding dominates there, it did not reduce flips on unseen text.
    - `ffn_apart`: where the LayerNorm-output GEMMs have the AVX2-safe 7-bit weights (no
      split there), the LayerNorm outputs that feed the feed-forward block (their GEMM's output
      goes to a GELU) keep this many channels in fp32 (`apart`, on those inputs only): a
      Gather, a rank-3 fp32 GEMM and an addition per layer. On the 20,000 out-of-domain
      selection texts (w7a8): 219 -> 192 flips, p99 0.043 -> 0.040, for 3% of one text's time
      and 6% of a batch's; with the tanh GELU, ~1% and 4-6%. With 8-bit weights the split is
      kept: there the same channels gave 2 texts of 20,000 for 3-5% of throughput.
    - `rotate`: LayerNorm outputs are multiplied by an orthonormal Hadamard matrix, block by
      block (`rotate` channels per block), before they are quantised, and their GEMMs' weight
      rows by its transpose: (x R)(R^T W) = x W, exact in fp32 (QuaRot, Ashkboos et al.
      2024, applied to each GEMM input rather than to the residual stream, which a post-
      LayerNorm model cannot rotate). A row's large values are spread over their block, so
      its largest value, which sets the row's scale, comes down towards the others: the
      [CLS] row's activation error on the Q/K/V input falls ~4x, every row's ~20%; the weight
      rows mix in the same way and round with ~15% less error. Where it applies it replaces
      smoothing, `split` and `ffn_apart` on that input: a Reshape, a [b, b] MatMul and a
      Reshape (one Shape per rows, shared). On the 40,000 out-of-domain selection texts:
      w8a8 245 -> 230 flips, p99 0.027 -> 0.024; the 7-bit weights 364 -> 287, p99 0.041 ->
      0.033; with smoothing as well, 220 and 278, for 12 more Muls (1.5-2.5% of one text):
      not taken. Blocks of 32: as good on w8a8, no better on w7a8.
    - `tanh_gelu`: the GELUs are computed with the tanh approximation (onnxruntime's
      FastGelu, the same kernel as BiasGelu with a tanh in place of erf): 15% less time in the
      GELU, 2.7-2.8% of the whole model at one text and in batches (stand-in, w8a8). The only
      refinement not exact in fp32: it differs from x * Phi(x) by at most 4.7e-4 (at
      x = -2.70), against a GELU output step of ~0.02 once quantised. On the 20,000
      out-of-domain selection texts: 130 -> 126 flips with w8a8; with the 7-bit weights 219 ->
      225 alone, 192 -> 193 with `ffn_apart`, whose cost it pays. The fp32 reference keeps erf.
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
    # Chosen on 5,500 out-of-domain selection texts (docs/building.md, "Fidelity").
    "balanced": Refinements(),
    # 16 channels apart: 40 flips of 5,500 and p99 0.031 (w7a8), 34 and 0.024 (w8a8), against
    # 44 / 0.036 and 35 / 0.026 with 4; on GELU outputs alone 4 beat 16 (64 / 0.043, 71 / 0.049).
    "high": Refinements(apart=16, apart_kinds=("norm", "gelu")),
}
DEFAULT_FIDELITY = "balanced"
REFINEMENTS = FIDELITY[DEFAULT_FIDELITY]


@dataclass(frozen=True)
class InputPlan:
    """How one GEMM input is quantised: per-channel divisors (smoothing), channels kept in fp32,
    and the second moments its consumers' weights are rounded against."""

    smooth: np.ndarray[Any, Any] | None = None  # [K]: x / s is quantised, s W is the weight
    apart: np.ndarray[Any, Any] | None = None  # channel indices kept in fp32
    hessian: np.ndarray[Any, Any] | None = None  # [K, K] of what is quantised
    # What the input is multiplied by before quantisation: 1/s, and 0 on the fp32 channels so
    # that they do not set the row's scale.
    divisor: np.ndarray[Any, Any] | None = None
    # Subtracted from the input before quantisation (0 on the fp32 channels); offset @ W goes
    # back in through the consumers' biases.
    offset: np.ndarray[Any, Any] | None = None
    # (channel, fractions f[m]): the channel leaves the input (divisor 0) and m copies f_j x
    # are appended; the weight gets m rows W[channel] / (m f_j) (see `Refinements.split`).
    split: tuple[int, np.ndarray[Any, Any]] | None = None
    # [b, b] orthogonal: the (smoothed) input is multiplied by it block by block before
    # quantisation, the weight by its transpose (`Refinements.rotate`).
    rotation: np.ndarray[Any, Any] | None = None


def hadamard(n: int) -> np.ndarray[Any, Any]:
    """The n x n orthonormal Hadamard matrix (Sylvester; n a power of 2)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    if h.shape[0] != n:
        raise ValueError(f"no Sylvester Hadamard matrix of order {n}")
    return np.asarray(h / np.sqrt(n), dtype=np.float64)


def block_rotation(rotation: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """The [k, k] block-diagonal matrix with `rotation` on its diagonal."""
    return np.kron(np.eye(k // rotation.shape[0]), rotation)


def rotatable(refine: Refinements, channels: int) -> bool:
    """Whether `Refinements.rotate` applies to a LayerNorm output this wide."""
    return bool(refine.rotate) and channels % (refine.rotate or 1) == 0


def plan_input(
    kind: str,
    stats: Any,
    weights: list[np.ndarray[Any, Any]],
    refine: Refinements,
    centrable: bool = False,
    foldable: bool = False,
) -> InputPlan:
    """The plan for one input from its calibration statistics (None: plain). `centrable`: the
    rewrite can subtract a per-channel offset for free (see `Refinements.centre`);
    `foldable`: an attention output whose value projection can take the smoothing."""
    if stats is None:
        return InputPlan()
    k = stats.absmax.shape[0]
    offset = None
    absmax = stats.absmax
    if centrable and refine.centre and kind in ("norm", "other"):
        offset = np.asarray(stats.mean, dtype=np.float64)
        absmax = stats.centred_absmax(offset)
    apart = None
    if kind in refine.apart_kinds and 0 < refine.apart < k:
        apart = np.sort(np.argsort(-absmax, kind="stable")[: refine.apart]).astype(np.int64)
    if offset is not None and apart is not None:  # the fp32 channels keep their own values
        offset = offset.copy()
        offset[apart] = 0.0
    rotating = kind == "norm" and rotatable(refine, k)
    smooth = None
    alpha = refine.smooth_alpha if kind == "norm" and not rotating else None
    if kind == "other" and foldable:
        alpha = refine.attention_alpha
    if alpha is not None:
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        smooth = _smoothing(absmax, wmax, alpha)
    hessian = None
    if refine.gptq:
        hessian = stats.hessian if offset is None else stats.centred_hessian(offset)
        if smooth is not None:
            hessian = hessian / np.outer(smooth, smooth)
        if apart is not None:  # those rows are zero in the int8 weight
            hessian = hessian.copy()
            hessian[apart, :] = 0.0
            hessian[:, apart] = 0.0
    divisor = None
    if smooth is not None or apart is not None:
        divisor = (1.0 / smooth if smooth is not None else np.ones(k)).astype(np.float32)
        if apart is not None:
            divisor[apart] = 0.0
    split = None
    if (
        kind == "norm"
        and refine.split is not None
        and smooth is not None
        and apart is None
        and not rotating
    ):
        split = _split(absmax, smooth, refine.split, refine.split_copies)
        channel, fractions = split
        divisor = (1.0 / smooth).astype(np.float32)
        divisor[channel] = 0.0
        if hessian is not None:  # of the input as quantised: G^T H G, G maps x to it
            raw = stats.hessian if offset is None else stats.centred_hessian(offset)
            g = np.zeros((k, k + len(fractions)))
            g[np.arange(k), np.arange(k)] = 1.0 / smooth
            g[channel, channel] = 0.0
            g[channel, k:] = fractions
            hessian = g.T @ raw @ g
    rotation = None
    if rotating and refine.rotate:
        rotation = hadamard(refine.rotate)
        if hessian is not None:
            full = block_rotation(rotation, k)
            hessian = full.T @ hessian @ full
    return InputPlan(smooth, apart, hessian, divisor, offset, split, rotation)


SPLIT_OCTAVE = 2.0  # the copies' fractions span [f, 2f): different rounding grids


def _split(
    absmax: np.ndarray[Any, Any], smooth: np.ndarray[Any, Any], margin: float, most: int
) -> tuple[int, np.ndarray[Any, Any]]:
    """(channel, fractions) for `Refinements.split`: the channel with the largest smoothed
    maximum, and m fractions f_j of it whose largest copy is at most 1/`margin` of the next
    channel's smoothed maximum (m <= `most`)."""
    smoothed = absmax / smooth
    channel = int(np.argmax(smoothed))
    ceiling = float(np.max(np.delete(smoothed, channel))) / margin
    ratio = float(smoothed[channel]) / max(ceiling, 1e-12)
    m = int(min(most, max(2, np.ceil(SPLIT_OCTAVE * ratio))))
    grids = 1.0 + np.arange(m) / m * (SPLIT_OCTAVE - 1.0)
    top = max(float(absmax[channel]), 1e-12)
    return channel, np.asarray(grids * ceiling / (SPLIT_OCTAVE * top), dtype=np.float64)


def split_weight(weight: np.ndarray[Any, Any], plan: InputPlan) -> np.ndarray[Any, Any]:
    """The (smoothed) weight for the split input: the channel's row zero, and m rows
    W[channel] / (m f_j) below, one per copy f_j x: sum_j (f_j x) W / (m f_j) = x W."""
    if plan.split is None:
        return weight
    channel, fractions = plan.split
    row = weight[channel].astype(np.float64)
    if plan.smooth is not None:
        row = row / plan.smooth[channel]
    out = weight.astype(np.float64)
    out[channel] = 0.0
    copies = row[None, :] / (len(fractions) * fractions[:, None])
    return np.concatenate([out, copies]).astype(np.float32)


@dataclass(frozen=True)
class Quantised:
    """The tensors of one quantised GEMM input, shared by all its consumers."""

    q: str
    amax: str
    step: str
    zero_point: str
    kind: str
    plan: InputPlan
    apart: str = ""  # the fp32 channels, gathered


GELU_APART_SHIFT = -1.0e30  # added to a GELU output's fp32 channels: quantised to 0


def rewrite(
    model: Any,
    recipe: PerTokenRecipe,
    calibration: Any = None,
    refine: Refinements = REFINEMENTS,
    embeddings: str = "fp16",
    report: dict[str, Any] | None = None,
    blocked: bool = True,
) -> int:
    """Rewrite `model` (an onnx ModelProto) in place; returns how many MatMuls were quantised.
    `report` (if given) gets how many inputs of each kind were centred and how activations
    are quantised. `blocked`: convert the graph to opset 21 first (`to_blocked_opset`), so
    that each row's scale goes into QuantizeLinear without a division pass.

    `calibration` (handler/compiler/calibrate.py, collected on this graph) enables `refine`;
    without it every GEMM input is quantised plainly."""
    from onnx import TensorProto, helper, numpy_helper

    if blocked:
        to_blocked_opset(model)
    merge_shared_input_linears(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def quantisable(node: Any) -> bool:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            return False
        w = inits[node.input[1]]
        return len(w.dims) == 2 and w.data_type == TensorProto.FLOAT

    groups: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        if quantisable(node):
            groups[node.input[0]].append(node)
    if not groups:
        return 0

    readers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def update(name: str, value: np.ndarray[Any, Any]) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def private(name: str, user: Any) -> str:
        """`name` as read by `user` alone: a copy when other nodes read it too."""
        if len(readers[name]) == 1:
            return name
        copy = f"{name}/own{len(graph.initializer)}"
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]), copy))
        inits[copy] = graph.initializer[-1]
        user.input[list(user.input).index(name)] = copy
        readers[name] = [n for n in readers[name] if n is not user]
        readers[copy] = [user]
        return copy

    def add_to(name: str, user: Any, delta: np.ndarray[Any, Any]) -> None:
        name = private(name, user)
        update(name, numpy_helper.to_array(inits[name]).astype(np.float64) + delta)

    # Every input's plan first: centring and smoothing change constants (biases, the value
    # projection's weights) that GEMMs earlier in the graph read.
    outputs = {o.name for o in graph.output}
    plans: dict[str, tuple[str, InputPlan]] = {}
    for src, members in groups.items():
        kind = input_kind(_source_op(producer, src))
        stats = calibration.inputs.get(src) if calibration is not None else None
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m in members]
        norm = value = None
        if stats is not None and kind == "norm":
            norm = _layernorm_shift(producer, src, inits, readers, members, outputs)
        elif stats is not None and kind == "other":
            value = _value_projection(producer, src, inits, readers, members)
        biases = None
        if norm is not None or value is not None:
            biases = _own_biases(members, readers, inits)
        own = refine
        if kind == "norm" and not recipe.full_norm_weights:
            own = replace(own, split=None)  # see Refinements.split: 8-bit weights only
            if (
                refine.ffn_apart
                and not rotatable(own, weights[0].shape[0])
                and "norm" not in refine.apart_kinds
                and _feeds_gelu(members, readers, inits)
            ):  # see Refinements.ffn_apart
                own = replace(own, apart=refine.ffn_apart, apart_kinds=(*own.apart_kinds, "norm"))
        plan = plan_input(
            kind, stats, weights, own, centrable=biases is not None, foldable=value is not None
        )
        if plan.offset is not None and biases is not None:  # x W = (x - c) W + c W
            for w, (user, bias_name) in zip(weights, biases, strict=True):
                add_to(bias_name, user, plan.offset @ w.astype(np.float64))
        if plan.offset is not None and norm is not None:
            # The LayerNorm writes y - c (its beta); the residual gets c back from the bias of
            # the sublayer output it is added to.
            ln, partners = norm
            add_to(ln.input[2], ln, -plan.offset)
            for add, bias_name in partners:
                add_to(bias_name, add, plan.offset)
        if value is not None and (plan.offset is not None or plan.smooth is not None):
            # The attention output moves with its values: (a - c) / s from V's columns.
            w_name, b_name, cols = value
            w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
            b = numpy_helper.to_array(inits[b_name]).astype(np.float64)
            if plan.offset is not None:
                b[cols] -= plan.offset
            if plan.smooth is not None:
                w[:, cols] /= plan.smooth
                b[cols] /= plan.smooth
            update(w_name, w)
            update(b_name, b)
            plan = replace(plan, divisor=None)
        plans[src] = (kind, plan)
        if report is not None and plan.split is not None:
            report.setdefault("channels_split", []).append(
                {"channel": plan.split[0], "copies": len(plan.split[1])}
            )
        if report is not None and plan.rotation is not None:
            report["inputs_rotated"] = report.get("inputs_rotated", 0) + 1
        if report is not None and plan.apart is not None:
            kept = report.setdefault("inputs_with_fp32_channels", {})
            kept[KIND_NAMES[kind]] = kept.get(KIND_NAMES[kind], 0) + 1
        if report is not None and plan.offset is not None:
            what = "attention outputs" if value is not None else KIND_NAMES[kind]
            centred = report.setdefault("inputs_centred", {})
            centred[what] = centred.get(what, 0) + 1

    rw = _Rewriter(model, recipe)
    if report is not None:
        report["activation_quantizer"] = (
            "QuantizeLinear with one scale per row (opset 21 blocks)"
            if rw.blocked
            else "Div by the row's largest value, QuantizeLinear"
        )
    quantised: dict[str, Quantised] = {}
    out_nodes: list[Any] = []
    for node in graph.node:
        if not quantisable(node):
            out_nodes.append(node)
            continue
        src = node.input[0]
        if src not in quantised:  # the first consumer: quantise the input once for all of them
            kind, plan = plans[src]
            tag = f"pt/a{len(quantised)}"
            apart = ""
            if plan.apart is not None:
                apart = f"{tag}/apart"
                index = rw.const(f"{tag}/apart_index", plan.apart)
                out_nodes.append(
                    helper.make_node("Gather", [src, index], [apart], name=apart, axis=-1)
                )
            channels = inits[groups[src][0].input[1]].dims[0]
            nodes, q, amax, step, zp = rw.quantise_input(src, tag, kind, plan, channels)
            out_nodes.extend(nodes)
            quantised[src] = Quantised(q, amax, step, zp, kind, plan, apart)
        weight = numpy_helper.to_array(inits[node.input[1]])
        out_nodes.extend(rw.gemm(quantised[src], weight, node.output[0]))

    _fold_unshift(out_nodes, inits, rw)
    tables = _quantise_embeddings(out_nodes, inits, rw, embeddings)
    out_nodes = _sum_chains(out_nodes, outputs)
    if refine.tanh_gelu:
        _tanh_gelu(out_nodes)  # see Refinements.tanh_gelu
    if report is not None:
        form = "tanh approximation (FastGelu)" if refine.tanh_gelu else "erf"
        report["gelu"] = form if any(n.op_type in GELU_OPS for n in out_nodes) else "none"
    replaced = {m.input[1] for members in groups.values() for m in members} | tables
    still_used = {name for node in out_nodes for name in node.input}
    keep = [i for i in graph.initializer if i.name not in replaced or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep + rw.new_inits)
    del graph.node[:]
    graph.node.extend(out_nodes)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sum(len(m) for m in groups.values())


def _tanh_gelu(nodes: list[Any]) -> None:
    """Every GELU as its tanh approximation (`Refinements.tanh_gelu`), in place: onnxruntime's
    Gelu and BiasGelu become FastGelu (same inputs: x and the optional bias, which ORT's
    BiasGeluFusion also folds into a FastGelu), ONNX's Gelu gets approximate="tanh"."""
    from onnx import helper

    for node in nodes:
        if node.domain == "com.microsoft" and node.op_type in ("Gelu", "BiasGelu"):
            node.op_type = "FastGelu"
        elif node.domain in ("", "ai.onnx") and node.op_type == "Gelu":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("approximate", "tanh"))


def _feeds_gelu(members: list[Any], readers: dict[str, list[Any]], inits: dict[str, Any]) -> bool:
    """Whether every GEMM in `members` goes into a GELU, directly or through the Add of a
    constant bias: the feed-forward block's first GEMM."""

    def gelu_reads(name: str) -> bool:
        users = readers.get(name, [])
        if len(users) != 1:
            return False
        if users[0].op_type in GELU_OPS:
            return True
        if users[0].op_type == "Add" and any(i in inits for i in users[0].input):
            return gelu_reads(users[0].output[0])
        return False

    return bool(members) and all(gelu_reads(m.output[0]) for m in members)


def _row_slice(node: Any, inits: dict[str, Any]) -> bool:
    """A Slice with constant axes, none of them the last (channel) axis, and unit steps: it
    keeps whole rows, so a per-channel offset passes through it unchanged."""
    from onnx import numpy_helper

    axes = inits.get(node.input[3]) if len(node.input) > 3 else None
    steps = inits.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if axes is None or -1 in numpy_helper.to_array(axes).tolist():
        return False
    return steps is None or bool(np.all(numpy_helper.to_array(steps) == 1))


def _layernorm_shift(
    producer: dict[str, Any],
    name: str,
    inits: dict[str, Any],
    readers: dict[str, list[Any]],
    members: list[Any],
    outputs: set[str],
) -> tuple[Any, list[tuple[Any, str]]] | None:
    """(the LayerNormalization, the residual Adds' bias Adds) when `name` is the output of a
    LayerNormalization over the last axis with a constant beta, and its every other reader
    (through Slices on other axes) is a residual Add whose other operand is `X + bias` read by
    nothing else: then y - c can be written by the LayerNorm itself (beta - c) and c added back
    to `bias`, so that every residual sum stays as it was. Else None."""
    from onnx import TensorProto

    ln = producer.get(name)
    if ln is None or ln.op_type != "LayerNormalization" or ln.domain not in ("", "ai.onnx"):
        return None
    if ln.output[0] != name or any(a.name == "axis" and a.i != -1 for a in ln.attribute):
        return None
    k = inits[members[0].input[1]].dims[0]
    if len(ln.input) < 3 or ln.input[2] not in inits or list(inits[ln.input[2]].dims) != [k]:
        return None
    if name in outputs:
        return None
    ours = {id(m) for m in members}
    partners = []
    for reader in readers[name]:
        if id(reader) in ours:
            continue
        through, node = name, reader
        while node.op_type == "Slice" and node.input[0] == through:
            if not _row_slice(node, inits):
                return None
            through = node.output[0]
            if through in outputs or len(readers[through]) != 1:
                return None
            node = readers[through][0]
        if node.op_type != "Add" or list(node.input).count(through) != 1:
            return None
        other = next(i for i in node.input if i != through)
        biased = producer.get(other)
        if biased is None or biased.op_type != "Add" or other in outputs:
            return None
        if len(readers[other]) != 1:
            return None
        bias_name = next((i for i in biased.input if i in inits), "")
        bias = inits.get(bias_name)
        if bias is None or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [k]:
            return None
        partners.append((biased, bias_name))
    return ln, partners


def _value_projection(
    producer: dict[str, Any],
    name: str,
    inits: dict[str, Any],
    readers: dict[str, list[Any]],
    members: list[Any],
) -> tuple[str, str, slice] | None:
    """(weight, bias, columns) of the value projection of the MultiHeadAttention whose output
    is `name`, when changing them changes nothing else: V read by that attention alone, a
    MatMul + bias Add (or the merged Q/K/V one and a Split) read by nothing else, and the
    output read only by `members`. Else None."""
    from onnx import numpy_helper

    if {id(n) for n in readers[name]} != {id(m) for m in members}:
        return None
    mha = producer.get(name)
    while mha is not None and mha.op_type == "Slice":  # rows.py's cut: rows of the same
        if not _row_slice(mha, inits) or len(readers[mha.input[0]]) != 1:
            return None
        mha = producer.get(mha.input[0])
    if mha is None or mha.op_type != "MultiHeadAttention" or mha.domain != "com.microsoft":
        return None
    if len(mha.input) < 3 or not mha.input[1] or not mha.input[2]:
        return None
    if len(mha.input) > 3 and mha.input[3]:  # a bias input of its own: not handled
        return None
    if any(mha.input[6:]):  # past keys and values (a decoder's cache) are not shifted
        return None
    v = mha.input[2]
    if len(readers[v]) != 1:
        return None
    node = producer.get(v)
    cols: slice | None = None
    if node is not None and node.op_type == "Split":
        sizes = inits.get(node.input[1]) if len(node.input) > 1 else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if sizes is None or axis != -1:
            return None
        widths = numpy_helper.to_array(sizes).tolist()
        j = list(node.output).index(v)
        cols = slice(int(sum(widths[:j])), int(sum(widths[: j + 1])))
        if len(readers[node.input[0]]) != 1:
            return None
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Add":
        return None
    bias_name = next((i for i in node.input if i in inits), "")
    other = next((i for i in node.input if i != bias_name), "")
    matmul = producer.get(other)
    if not bias_name or matmul is None or matmul.op_type != "MatMul":
        return None
    w_name = matmul.input[1]
    if w_name not in inits or len(readers[w_name]) != 1 or len(readers[bias_name]) != 1:
        return None
    if len(readers[other]) != 1:
        return None
    n = inits[w_name].dims[1]
    if list(inits[bias_name].dims) != [n]:
        return None
    return w_name, bias_name, cols if cols is not None else slice(0, n)


def _own_biases(members: list[Any], readers: dict[str, list[Any]], inits: dict[str, Any]) -> Any:
    """Each GEMM's constant bias ([N]) as (the node that adds it, its name): the Add or
    BiasGelu that is its output's only reader. None unless every GEMM in `members` has one."""
    from onnx import TensorProto

    names = []
    for m in members:
        users = readers[m.output[0]]
        if len(users) != 1 or users[0].op_type not in ("Add", "BiasGelu"):
            return None
        user = users[0]
        if user.op_type == "BiasGelu" and user.input[0] != m.output[0]:
            return None
        bias_name = next((i for i in user.input if i != m.output[0]), "")
        bias = inits.get(bias_name)
        n = inits[m.input[1]].dims[1]
        if bias is None or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [n]:
            return None
        names.append((user, bias_name))
    return names


def _smoothing(
    absmax: np.ndarray[Any, Any], wmax: np.ndarray[Any, Any], alpha: float
) -> np.ndarray[Any, Any]:
    """SmoothQuant's per-channel factor: x / s into the activations, s into the weight rows."""
    a = np.maximum(absmax, 1e-5)
    w = np.maximum(wmax, 1e-5)
    s = a**alpha / w ** (1.0 - alpha)
    return np.asarray(s / np.exp(np.mean(np.log(s))), dtype=np.float64)


def merge_shared_input_linears(model: Any) -> int:
    """Linear layers that read the same tensor (Q, K and V) -> one MatMul on the concatenated
    weights, one Add of the concatenated biases, and a Split into the three outputs.

    Exact in fp32 and after quantisation alike (per-column weight scales and per-row
    activation scales do not change): fewer, wider GEMMs and four nodes less per layer.
    Returns how many groups were merged.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def linear(node: Any) -> Any:
        """The bias Add after a MatMul with a constant 2-D weight, or None."""
        if node.op_type != "MatMul" or node.input[1] not in inits:
            return None
        w = inits[node.input[1]]
        users = readers[node.output[0]]
        if len(w.dims) != 2 or w.data_type != TensorProto.FLOAT or len(users) != 1:
            return None
        add = users[0]
        bias_name = next((i for i in add.input if i != node.output[0]), "")
        bias = inits.get(bias_name)
        if add.op_type != "Add" or bias is None or list(bias.dims) != [w.dims[1]]:
            return None
        return add if len(readers[bias_name]) == 1 else None

    groups: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for node in graph.node:
        add = linear(node)
        if add is not None:
            groups[node.input[0]].append((node, add))
    merged = 0
    new_nodes: dict[int, list[Any]] = {}  # by id(): node names need not be unique, or set
    drop: set[int] = set()
    for src, members in groups.items():
        if len(members) < 2:
            continue
        tag = f"pt/merged{merged}"
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m, _ in members]
        biases = [
            numpy_helper.to_array(inits[next(i for i in a.input if i != m.output[0])])
            for m, a in members
        ]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(weights, axis=1), f"{tag}/weight"),
                numpy_helper.from_array(np.concatenate(biases), f"{tag}/bias"),
                numpy_helper.from_array(
                    np.array([w.shape[1] for w in weights], dtype=np.int64), f"{tag}/split"
                ),
            ]
        )
        new_nodes[id(members[0][0])] = [
            helper.make_node("MatMul", [src, f"{tag}/weight"], [f"{tag}/y"], name=f"{tag}/MatMul"),
            helper.make_node("Add", [f"{tag}/y", f"{tag}/bias"], [f"{tag}/yb"], name=f"{tag}/Add"),
            helper.make_node(
                "Split",
                [f"{tag}/yb", f"{tag}/split"],
                [a.output[0] for _, a in members],
                name=f"{tag}/Split",
                axis=-1,
            ),
        ]
        drop.update(id(n) for pair in members for n in pair)
        merged += 1
    if not merged:
        return 0
    nodes: list[Any] = []
    for node in graph.node:
        nodes.extend(new_nodes.get(id(node), []))
        if id(node) not in drop:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return merged


def _fold_unshift(nodes: list[Any], inits: dict[str, Any], rw: _Rewriter) -> None:
    """Fold each GELU un-shift constant into the bias Add that follows its GEMM, where there is
    one (MatMul -> Add(bias) is how exporters write a Linear layer): one node less per layer."""
    from onnx import TensorProto

    new = {i.name: i for i in rw.new_inits}
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            readers[name].append(node)
    for node in list(nodes):
        if node.op_type != "Add" or not node.input[1].endswith("/unshift"):
            continue
        users = readers[node.output[0]]
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        bias_name = next((i for i in users[0].input if i != node.output[0]), "")
        bias = inits.get(bias_name)
        if (
            bias is None
            or bias.data_type != TensorProto.FLOAT
            or len(readers[bias_name]) != 1
            or list(bias.dims) != list(new[node.input[1]].dims)
        ):
            continue
        folded = rw.numpy_helper.to_array(bias) + rw.numpy_helper.to_array(new[node.input[1]])
        bias.CopyFrom(rw.numpy_helper.from_array(folded.astype(np.float32), bias_name))
        producer = next(n for n in nodes if node.input[0] in n.output)
        producer.output[0] = node.output[0]
        nodes.remove(node)
        rw.new_inits.remove(new[node.input[1]])


EMBEDDINGS = ("fp16", "int8")


def _readers(nodes: list[Any]) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            readers[name].append(node)
    return readers


def _sum_chains(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """Chains of Adds whose partial sums nothing else reads (a GEMM's result, its fp32
    channels' part, its bias and the residual) -> one Sum of all the terms, in the same order:
    fewer nodes, the same arithmetic."""
    producer = {out: node for node in nodes for out in node.output}
    readers = _readers(nodes)

    def inner(name: str) -> Any:
        node = producer.get(name)
        if node is None or node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
            return None
        return node if len(readers[name]) == 1 and name not in outputs else None

    def terms_of(add: Any, absorbed: list[Any]) -> list[str]:
        """The chain's terms in order, depth first; the inner Adds into `absorbed`."""
        terms: list[str] = []
        for name in add.input:
            part = inner(name)
            if part is None:
                terms.append(name)
            else:
                absorbed.append(part)
                terms += terms_of(part, absorbed)
        return terms

    dropped: set[int] = set()
    for node in reversed(nodes):
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or id(node) in dropped:
            continue
        absorbed: list[Any] = []
        terms = terms_of(node, absorbed)
        if absorbed:
            dropped.update(id(a) for a in absorbed)
            node.op_type = "Sum"
            del node.input[:]
            node.input.extend(terms)
    return [n for n in nodes if id(n) not in dropped]


def _quantise_embeddings(
    nodes: list[Any], inits: dict[str, Any], rw: _Rewriter, kind: str = "fp16"
) -> set[str]:
    """Gather from a float table -> Gather from a smaller copy of it, then back to float.

    "fp16" (the default): a Cast after the Gather; half the size, 11 significant bits. Chosen on
    out-of-domain selection text: int8 tables (one scale per column, a DequantizeLinear after
    the Gather; a quarter of the size) cost w7a8 52 flips of 5,500 instead of 44, and score
    differences (p99) of 0.037 instead of 0.036 (docs/building.md, "Fidelity").
    Each token's row is converted on its own (batch-invariant).
    """
    from onnx import TensorProto

    if kind not in EMBEDDINGS:
        raise ValueError(f"embeddings: {kind!r} is not one of {', '.join(EMBEDDINGS)}")
    replaced: set[str] = set()
    for node in list(nodes):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        if any(other is not node and node.input[0] in other.input for other in nodes):
            continue  # the table is also read elsewhere (e.g. tied weights): leave it whole
        tag = node.output[0] + "/pt"
        values = rw.numpy_helper.to_array(table)
        if kind == "fp16":
            stored = rw.const(f"{tag}/table_fp16", values.astype(np.float16))
            back = rw.helper.make_node(
                "Cast",
                [f"{tag}/small"],
                [node.output[0]],
                name=node.output[0],
                to=TensorProto.FLOAT,
            )
        else:
            wq, ws = quantize_weight(values, 127)
            stored = rw.const(f"{tag}/table_int8", wq)
            zero = rw.const(f"{tag}/zero_point", np.zeros(wq.shape[1], dtype=np.int8))
            scale = rw.const(f"{tag}/scale", ws)
            back = rw.node(
                "DequantizeLinear", [f"{tag}/small", scale, zero], node.output[0], axis=-1
            )
        gather = rw.helper.make_node(
            "Gather", [stored, node.input[1]], [f"{tag}/small"], name=f"{tag}/Gather"
        )
        at = nodes.index(node)
        nodes[at : at + 1] = [gather, back]
        replaced.add(node.input[0])
    return replaced


def to_exact_twin(model: Any) -> int:
    """Store every int8 GEMM weight as uint8 around 128, in place; returns how many.

    The same integers, so the same answers as a CPU whose u8*s8 sums never saturate (VNNI,
    arm64 SDOT): u8u8 kernels widen to 16 bits on every CPU. The build evaluates a full-range
    recipe this way on a host that saturates; the shipped graph keeps its int8 weights.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMulIntegerToFloat" or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if weight.data_type != TensorProto.INT8:
            continue
        w = numpy_helper.to_array(weight)
        weight.CopyFrom(
            numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), weight.name)
        )
        zp_name = f"{node.input[1]}/twin_zero_point"
        model.graph.initializer.append(
            numpy_helper.from_array(np.full(w.shape[1], 128, dtype=np.uint8), zp_name)
        )
        while len(node.input) < 5:
            node.input.append("")
        if len(node.input) == 5:
            node.input.append(zp_name)
        else:
            node.input[5] = zp_name
        count += 1
    return count


def quantize_file(
    src: Path,
    dst: Path,
    recipe: PerTokenRecipe,
    calibration: Any = None,
    refine: Refinements = REFINEMENTS,
) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(src))
    done: dict[str, Any] = {}
    count = rewrite(model, recipe, calibration, refine, report=done)
    onnx.save(model, str(dst))
    out = {**recipe.describe(), "matmuls_quantized": count}
    if calibration is not None:
        name = next((n for n, r in FIDELITY.items() if r == refine), "custom")
        out["refinements"] = {
            "fidelity": name,
            **refine.describe(calibration),
            "inputs_centred": done.get("inputs_centred", {}),
            "channels_split": done.get("channels_split", []),
            "inputs_rotated": done.get("inputs_rotated", 0),
            "inputs_with_fp32_channels": done.get("inputs_with_fp32_channels", {}),
        }
    out["activation_quantizer"] = done["activation_quantizer"]
    out["gelu"] = done.get("gelu", "none")
    return out


def exact_twin_file(src: Path, dst: Path) -> None:
    import onnx

    model = onnx.load(str(src))
    to_exact_twin(model)
    onnx.save(model, str(dst))

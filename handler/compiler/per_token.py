"""Per-token int8: every MatMul with a constant weight becomes an integer GEMM whose activations
are quantised with one scale per token row.

A row's scale depends on that row alone, so padding rows and batch-mates cannot change a real
text's answer: int8 graphs run in padded batches. For each activation tensor A that feeds such
MatMuls (Q, K and V share one quantisation of their common input):

    amax = ReduceMax(Abs(A), axis=-1, keepdims)                   [rows, 1]
    A_u8 = QuantizeLinear(A / amax, 1/qmax, zero_point)           symmetric around zero_point
    Y    = MatMulIntegerToFloat(A_u8, W_s8, 1/qmax, w_scale[N], zero_point) * amax

Four nodes per activation tensor (Abs, ReduceMax, Div, QuantizeLinear: three passes over it)
and one Mul per GEMM: the 1/qmax of the row scale rides in the GEMM's scalar scale. Linear
layers on one input (Q, K, V) are first merged into one GEMM and a Split (exact).

GELU outputs are never below GELU's minimum (-0.17): they are shifted by +0.17 and quantised
unsigned from 0 (the whole uint range on the values that occur, one more bit of resolution than
symmetric); the shift times the weights' column sums is a constant added back after the GEMM.

Weights are symmetric int8 per output column. `MatMulIntegerToFloat` is an onnxruntime contrib
op with a kernel on every CPU; everything else is standard ONNX.

Saturation: x86-64 without VNNI multiplies u8 by s8 with VPMADDUBSW, which adds two products in
int16 with saturation (onnxruntime#5849, #14642). A recipe is AVX2-safe when
2 * max(u8) * max(|s8|) <= 32767: 7-bit activations (u8 <= 127) with full-range weights, or
8-bit activations with 7-bit weights (|s8| <= 63).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
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


def quantize_weight(w: np.ndarray[Any, Any], qmax: int) -> tuple[np.ndarray[Any, Any], Any]:
    """Symmetric per-column int8: W ~= W_q * scale[col]."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
    return q, scale


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

    def const(self, name: str, value: np.ndarray[Any, Any]) -> str:
        self.new_inits.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        domain = "com.microsoft" if op == "MatMulIntegerToFloat" else ""
        return self.helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)

    def quantise_input(self, src: str, tag: str, kind: str) -> tuple[list[Any], str, str, str, str]:
        """Nodes that quantise `src` per row: (nodes, u8 tensor, row amax, step, zero point)."""
        r = self.recipe.bits_for(kind)
        if kind == "gelu":
            qmax, zp = r.max_u8, 0
            shift = self.const(f"{tag}/shift", np.array(GELU_MIN, dtype=np.float32))
            nodes = [self.node("Add", [src, shift], f"{tag}/shifted")]
            src = f"{tag}/shifted"
            amax_in = src
        else:
            qmax, zp = r.symmetric_qmax, r.zero_point
            nodes = [self.node("Abs", [src], f"{tag}/abs")]
            amax_in = f"{tag}/abs"
        step = self.const(f"{tag}/step", np.array(1.0 / qmax, dtype=np.float32))
        zp_name = self.const(f"{tag}/zero_point", np.array(zp, dtype=np.uint8))
        nodes += [
            self.node(
                "ReduceMax", [amax_in, *self.axes_in], f"{tag}/amax", keepdims=1, **self.axes_attr
            ),
            self.node("Div", [src, f"{tag}/amax"], f"{tag}/unit"),
            self.node("QuantizeLinear", [f"{tag}/unit", step, zp_name], f"{tag}/q"),
        ]
        return nodes, f"{tag}/q", f"{tag}/amax", step, zp_name

    def gemm(
        self,
        quantised: tuple[str, str, str, str, str],
        weight: np.ndarray[Any, Any],
        out: str,
    ) -> list[Any]:
        q, amax, step, zp, kind = quantised
        shifted = kind == "gelu"
        bits = self.recipe.bits_for(kind)
        wq, ws = quantize_weight(weight, bits.weight_qmax)
        tag = out + "/pt"
        inputs = [q, self.const(f"{tag}/w_int8", wq), step, self.const(f"{tag}/w_scale", ws), zp]
        nodes = [
            self.node("MatMulIntegerToFloat", inputs, f"{tag}/y"),
            self.node("Mul", [f"{tag}/y", amax], f"{tag}/scaled" if shifted else out),
        ]
        if shifted:  # (A + c) W = A W + c colsum(W): take the constant back out
            correction = -GELU_MIN * (wq.astype(np.float32) * ws).sum(axis=0)
            name = self.const(f"{tag}/unshift", correction.astype(np.float32))
            nodes.append(self.node("Add", [f"{tag}/scaled", name], out))
        return nodes


def rewrite(model: Any, recipe: PerTokenRecipe) -> int:
    """Rewrite `model` (an onnx ModelProto) in place; returns how many MatMuls were quantised."""
    from onnx import TensorProto, helper, numpy_helper

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

    rw = _Rewriter(model, recipe)
    quantised: dict[str, tuple[str, str, str, str, str]] = {}
    out_nodes: list[Any] = []
    for node in graph.node:
        if not quantisable(node):
            out_nodes.append(node)
            continue
        src = node.input[0]
        if src not in quantised:  # the first consumer: quantise the input once for all of them
            kind = input_kind(_source_op(producer, src))
            nodes, q, amax, step, zp = rw.quantise_input(src, f"pt/a{len(quantised)}", kind)
            out_nodes.extend(nodes)
            quantised[src] = (q, amax, step, zp, kind)
        weight = numpy_helper.to_array(inits[node.input[1]])
        out_nodes.extend(rw.gemm(quantised[src], weight, node.output[0]))

    _fold_unshift(out_nodes, inits, rw)
    embeddings = _quantise_embeddings(out_nodes, inits, rw)
    replaced = {m.input[1] for members in groups.values() for m in members} | embeddings
    still_used = {name for node in out_nodes for name in node.input}
    keep = [i for i in graph.initializer if i.name not in replaced or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep + rw.new_inits)
    del graph.node[:]
    graph.node.extend(out_nodes)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sum(len(m) for m in groups.values())


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


def _quantise_embeddings(nodes: list[Any], inits: dict[str, Any], rw: _Rewriter) -> set[str]:
    """Gather from a float table -> Gather from its int8 copy, DequantizeLinear with one scale
    per column. Each token's row is dequantised on its own (batch-invariant); the table is a
    quarter of its size. Per column, not per row: measured closer to fp32 (mean score
    difference 0.0074 vs 0.0076 on SST-2 half b) and two nodes instead of four."""
    from onnx import TensorProto

    replaced: set[str] = set()
    for node in list(nodes):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        if any(other is not node and node.input[0] in other.input for other in nodes):
            continue  # the table is also read elsewhere (e.g. tied weights): leave it whole
        # One scale per column (embedding dimension): a Gather and a DequantizeLinear.
        wq, ws = quantize_weight(rw.numpy_helper.to_array(table), 127)
        tag = node.output[0] + "/pt"
        table_q = rw.const(f"{tag}/table_int8", wq)
        zero = rw.const(f"{tag}/zero_point", np.zeros(wq.shape[1], dtype=np.int8))
        scale = rw.const(f"{tag}/scale", ws)
        new = [
            rw.helper.make_node(
                "Gather", [table_q, node.input[1]], [f"{tag}/int8"], name=f"{tag}/Gather"
            ),
            rw.node("DequantizeLinear", [f"{tag}/int8", scale, zero], node.output[0], axis=-1),
        ]
        at = nodes.index(node)
        nodes[at : at + 1] = new
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


def quantize_file(src: Path, dst: Path, recipe: PerTokenRecipe) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(src))
    count = rewrite(model, recipe)
    onnx.save(model, str(dst))
    return {**recipe.describe(), "matmuls_quantized": count}


def exact_twin_file(src: Path, dst: Path) -> None:
    import onnx

    model = onnx.load(str(src))
    to_exact_twin(model)
    onnx.save(model, str(dst))

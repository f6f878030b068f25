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
unsigned from 0; the shift times the weights' column sums is a constant added back after the
GEMM. Weights are symmetric int8 per output column. `MatMulIntegerToFloat` is an onnxruntime
contrib op with a kernel on every CPU; everything else is standard ONNX.

`rewrite` runs in named stages; each lives in a module of its own:

1. `passes.to_blocked_opset`, `passes.merge_shared_input_linears`: prepare the graph.
2. `_plan`: each GEMM input's `planning.InputPlan` from its calibration statistics
   (`targets.Refinements`), with the offsets it needs moved into biases (`_Constants`, on the
   places `patterns` finds).
3. `_emit`: the nodes that quantise each input once and its consumers' integer GEMMs
   (`emit.Emitter`, weights rounded by `weights`).
4. `_finish`: fold constants, smaller embedding tables, Add chains into Sums, the tanh GELU
   (`passes`), and the graph's initializers and nodes replaced.

Bit widths come from the recipe (`targets.RECIPES`); the integer ranges are the recipe's, so an
AVX2-safe recipe stays AVX2-safe.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from handler.compiler.emit import Emitter, Quantised
from handler.compiler.graph import GELU_OPS, GraphIndex
from handler.compiler.passes import (
    fold_unshift,
    merge_shared_input_linears,
    quantise_embeddings,
    sum_chains,
    to_blocked_opset,
    to_exact_twin,
    to_tanh_gelu,
)
from handler.compiler.patterns import (
    feeds_gelu,
    input_kind,
    layernorm_shift,
    own_biases,
    source_op,
    value_projection,
)
from handler.compiler.planning import InputPlan, plan_input, rotatable
from handler.compiler.targets import FIDELITY, KIND_NAMES, REFINEMENTS, PerTokenRecipe, Refinements


class _Constants:
    """Edits to the graph's float constants: a constant changed for one reader is copied first
    when other nodes read it too."""

    def __init__(self, graph: Any, g: GraphIndex) -> None:
        self.graph, self.inits, self.readers = graph, g.inits, g.readers

    def update(self, name: str, value: np.ndarray[Any, Any]) -> None:
        from onnx import numpy_helper

        self.inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def private(self, name: str, user: Any) -> str:
        """`name` as read by `user` alone: a copy when other nodes read it too."""
        from onnx import numpy_helper

        readers = self.readers
        if len(readers[name]) == 1:
            return name
        copy = f"{name}/own{len(self.graph.initializer)}"
        self.graph.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(self.inits[name]), copy)
        )
        self.inits[copy] = self.graph.initializer[-1]
        user.input[list(user.input).index(name)] = copy
        readers[name] = [n for n in readers[name] if n is not user]
        readers[copy] = [user]
        return copy

    def add_to(self, name: str, user: Any, delta: np.ndarray[Any, Any]) -> None:
        from onnx import numpy_helper

        name = self.private(name, user)
        self.update(name, numpy_helper.to_array(self.inits[name]).astype(np.float64) + delta)

    def array(self, name: str) -> np.ndarray[Any, Any]:
        from onnx import numpy_helper

        return np.asarray(numpy_helper.to_array(self.inits[name]))


def _quantisable(node: Any, inits: dict[str, Any]) -> bool:
    """A MatMul by a constant 2-D float weight."""
    from onnx import TensorProto

    if node.op_type != "MatMul" or node.input[1] not in inits:
        return False
    w = inits[node.input[1]]
    return len(w.dims) == 2 and w.data_type == TensorProto.FLOAT


def _note(report: dict[str, Any] | None, kind: str, plan: InputPlan, attention: bool) -> None:
    if report is None:
        return
    if plan.split is not None:
        report.setdefault("channels_split", []).append(
            {"channel": plan.split[0], "copies": len(plan.split[1])}
        )
    if plan.rotation is not None:
        report["inputs_rotated"] = report.get("inputs_rotated", 0) + 1
    if plan.apart is not None:
        kept = report.setdefault("inputs_with_fp32_channels", {})
        kept[KIND_NAMES[kind]] = kept.get(KIND_NAMES[kind], 0) + 1
    if plan.offset is not None:
        what = "attention outputs" if attention else KIND_NAMES[kind]
        centred = report.setdefault("inputs_centred", {})
        centred[what] = centred.get(what, 0) + 1


def _refinements_for(
    kind: str,
    members: list[Any],
    weights: list[np.ndarray[Any, Any]],
    recipe: PerTokenRecipe,
    refine: Refinements,
    g: GraphIndex,
) -> Refinements:
    """The refinements one input gets: no split without 8-bit weights, and with the 7-bit ones
    fp32 channels on feed-forward inputs that are not rotated (`Refinements.ffn_apart`)."""
    own = refine
    if kind == "norm" and not recipe.full_norm_weights:
        own = replace(own, split=None)
        if (
            refine.ffn_apart
            and not rotatable(own, weights[0].shape[0])
            and "norm" not in refine.apart_kinds
            and feeds_gelu(members, g)
        ):
            own = replace(own, apart=refine.ffn_apart, apart_kinds=(*own.apart_kinds, "norm"))
    return own


def _plan(
    model: Any,
    groups: dict[str, list[Any]],
    g: GraphIndex,
    recipe: PerTokenRecipe,
    calibration: Any,
    refine: Refinements,
    report: dict[str, Any] | None,
) -> dict[str, tuple[str, InputPlan]]:
    """Every input's plan, before any node is emitted: centring and smoothing change constants
    (biases, the value projection's weights) that GEMMs earlier in the graph read."""
    from onnx import numpy_helper

    consts = _Constants(model.graph, g)
    outputs = {o.name for o in model.graph.output}
    plans: dict[str, tuple[str, InputPlan]] = {}
    for src, members in groups.items():
        kind = input_kind(source_op(g.producer, src))
        stats = calibration.inputs.get(src) if calibration is not None else None
        weights = [numpy_helper.to_array(g.inits[m.input[1]]) for m in members]
        norm = value = None
        if stats is not None and kind == "norm":
            norm = layernorm_shift(g, src, members, outputs)
        elif stats is not None and kind == "other":
            value = value_projection(g, src, members)
        biases = None
        if norm is not None or value is not None:
            biases = own_biases(members, g)
        own = _refinements_for(kind, members, weights, recipe, refine, g)
        plan = plan_input(
            kind, stats, weights, own, centrable=biases is not None, foldable=value is not None
        )
        if plan.offset is not None and biases is not None:  # x W = (x - c) W + c W
            for w, (user, bias_name) in zip(weights, biases, strict=True):
                consts.add_to(bias_name, user, plan.offset @ w.astype(np.float64))
        if plan.offset is not None and norm is not None:
            # The LayerNorm writes y - c (its beta); the residual gets c back from the bias of
            # the sublayer output it is added to.
            ln, partners = norm
            consts.add_to(ln.input[2], ln, -plan.offset)
            for add, bias_name in partners:
                consts.add_to(bias_name, add, plan.offset)
        if value is not None and (plan.offset is not None or plan.smooth is not None):
            # The attention output moves with its values: (a - c) / s from V's columns.
            w_name, b_name, cols = value
            w = consts.array(w_name).astype(np.float64)
            b = consts.array(b_name).astype(np.float64)
            if plan.offset is not None:
                b[cols] -= plan.offset
            if plan.smooth is not None:
                w[:, cols] /= plan.smooth
                b[cols] /= plan.smooth
            consts.update(w_name, w)
            consts.update(b_name, b)
            plan = replace(plan, divisor=None)
        plans[src] = (kind, plan)
        _note(report, kind, plan, attention=value is not None)
    return plans


def _emit(
    model: Any,
    groups: dict[str, list[Any]],
    plans: dict[str, tuple[str, InputPlan]],
    rw: Emitter,
    inits: dict[str, Any],
) -> list[Any]:
    """The graph's nodes with each quantisable MatMul replaced: its input quantised once, at its
    first consumer, and an integer GEMM per consumer."""
    from onnx import helper, numpy_helper

    quantised: dict[str, Quantised] = {}
    out_nodes: list[Any] = []
    for node in model.graph.node:
        if not _quantisable(node, inits):
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
    return out_nodes


def _finish(
    model: Any,
    out_nodes: list[Any],
    groups: dict[str, list[Any]],
    rw: Emitter,
    inits: dict[str, Any],
    refine: Refinements,
    embeddings: str,
    report: dict[str, Any] | None,
) -> None:
    """Fold, shrink and sum; then the graph's initializers and nodes are the rewritten ones."""
    from onnx import helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    fold_unshift(out_nodes, inits, rw)
    tables = quantise_embeddings(out_nodes, inits, rw, embeddings)
    out_nodes = sum_chains(out_nodes, outputs)
    if refine.tanh_gelu:
        to_tanh_gelu(out_nodes)  # see Refinements.tanh_gelu
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
    if blocked:
        to_blocked_opset(model)
    merge_shared_input_linears(model)
    g = GraphIndex.of(model)
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if _quantisable(node, g.inits):
            groups[node.input[0]].append(node)
    if not groups:
        return 0
    plans = _plan(model, groups, g, recipe, calibration, refine, report)
    rw = Emitter(model, recipe)
    if report is not None:
        report["activation_quantizer"] = (
            "QuantizeLinear with one scale per row (opset 21 blocks)"
            if rw.blocked
            else "Div by the row's largest value, QuantizeLinear"
        )
    out_nodes = _emit(model, groups, plans, rw, g.inits)
    _finish(model, out_nodes, groups, rw, g.inits, refine, embeddings, report)
    return sum(len(m) for m in groups.values())


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

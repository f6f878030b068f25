"""The rewrite's activation quantiser (opset 21's one scale per row, no division pass; the
zero-point tensor shared by inputs with the same rows) and the split of a LayerNorm output's
outlier channel into copies (targets.Refinements.split)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from handler.compiler import passes, patterns, per_token, planning, targets, weights
from tests.compiler.test_per_token import K, _run, _session
from tests.compiler.test_refinements import (
    VOCAB,
    _calibrated,
    _norm_graph,
    _residual_graph,
    balanced_refine,
)


def _rewritten(
    model: onnx.ModelProto,
    calib: Any,
    refine: targets.Refinements,
    blocked: bool = True,
    recipe: str = "w8a8",
) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    per_token.rewrite(out, targets.RECIPES[recipe], calib, refine, blocked=blocked)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, None))
    return out


def test_one_quantizer_per_row_without_a_division_pass(tmp_path: Path) -> None:
    model = _residual_graph()
    calib = _calibrated(model, tmp_path)
    blocked = _rewritten(model, calib, balanced_refine())
    divided = _rewritten(model, calib, balanced_refine(), blocked=False)
    assert _opset(model) == 17 and _opset(blocked) == passes.BLOCKED_OPSET
    assert _opset(divided) == 17
    ops = [n.op_type for n in blocked.graph.node]
    assert "Div" not in ops and [n.op_type for n in divided.graph.node].count("Div") == 2
    # The converter's inferred shapes are not kept (they made onnxruntime slower).
    assert len(blocked.graph.value_info) == 0
    rows = [
        n
        for n in blocked.graph.node
        if n.op_type == "QuantizeLinear" and n.output[0].endswith("/q")
    ]
    assert len(rows) == 2
    sizes = {a.name: a.i for n in rows for a in n.attribute if a.name == "block_size"}
    assert sizes and all(v >= K for v in sizes.values())
    # The same integers as dividing by the row's largest value (up to a rounding tie).
    ids = np.random.default_rng(4).integers(0, VOCAB, size=(3, 8))
    q_blocked = _run(_with_output(blocked, "pt/a0/q"), ids)[-1].astype(int)
    q_divided = _run(_with_output(divided, "pt/a0/q"), ids)[-1].astype(int)
    assert q_blocked.shape == q_divided.shape
    assert np.abs(q_blocked - q_divided).max() <= 1 and (q_blocked != q_divided).mean() < 0.01


def test_inputs_with_the_same_rows_share_one_zero_point_tensor(tmp_path: Path) -> None:
    # x = LayerNorm(...) feeds the first GEMM; GELU(x W1 + b1) the second: the same rows.
    model = _norm_graph(outlier=1.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    refined = _rewritten(model, calib, balanced_refine(), recipe="w8a8")
    zero_points = [n for n in refined.graph.node if n.output[0].endswith("/row_zp")]
    # The GELU output is quantised from 0 (no zero-point tensor); the LayerNorm output has one.
    assert len(zero_points) == 1
    rows = patterns.row_sources(model.graph)
    assert rows["x"] == rows["h"] == rows["g"] == rows["y"]


def test_a_slice_of_rows_or_a_wide_constant_starts_rows_of_their_own() -> None:
    wide = numpy_helper.from_array(np.ones((4, K), dtype=np.float32), "wide")
    vec = numpy_helper.from_array(np.ones(K, dtype=np.float32), "vec")
    axes = numpy_helper.from_array(np.array([1]), "axes")
    starts = numpy_helper.from_array(np.array([0]), "starts")
    ends = numpy_helper.from_array(np.array([1]), "ends")
    nodes = [
        helper.make_node("Add", ["x", "vec"], ["a"]),  # same rows as x
        helper.make_node("Add", ["a", "x"], ["b"]),  # both from x's rows
        helper.make_node("Slice", ["b", "starts", "ends", "axes"], ["c"]),  # fewer rows
        helper.make_node("Mul", ["c", "vec"], ["d"]),
        helper.make_node("Add", ["b", "wide"], ["e"]),  # a constant of rank 2 broadcasts rows
        helper.make_node("Add", ["b", "c"], ["f"]),  # rows of two different sources
    ]
    graph = helper.make_graph(
        nodes,
        "rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "def"],
        [wide, vec, axes, starts, ends],
    )
    rows = patterns.row_sources(graph)
    assert rows["a"] == rows["b"] == "x"
    assert rows["c"] == rows["d"] == "c"
    assert rows["e"] == "e" and rows["f"] == "f"


def test_splitting_the_outlier_channel_is_exact_in_fp32(tmp_path: Path) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    w = np.random.default_rng(5).normal(size=(K, 12))
    plan = planning.plan_input("norm", calib.inputs["x"], [w], balanced_refine())
    assert plan.split is not None and plan.smooth is not None and plan.divisor is not None
    channel, fractions = plan.split
    assert channel == 5  # the channel whose gamma is 40x the others'
    m = len(fractions)
    assert 2 <= m <= balanced_refine().split_copies
    assert plan.divisor[channel] == 0.0 and plan.hessian is not None
    assert plan.hessian.shape == (K + m, K + m)
    # What is quantised: x with the channel zeroed, divided by s, then m copies f_j x_c.
    x = np.random.default_rng(6).normal(size=(7, K)) * 3
    quantised = np.concatenate([x * plan.divisor, x[:, [channel]] * fractions], axis=1)
    weight = weights.split_weight((w * plan.smooth[:, None]).astype(np.float32), plan)
    assert weight.shape == (K + m, 12)
    np.testing.assert_allclose(quantised @ weight.astype(np.float64), x @ w, rtol=1e-5, atol=1e-4)
    # No copy is larger than a third of the next channel's largest (smoothed) value.
    others = np.delete(calib.inputs["x"].absmax / plan.smooth, channel).max()
    assert calib.inputs["x"].absmax[channel] * fractions.max() <= others / 3 * (1 + 1e-6)
    # The copies round on different grids: no two fractions alike.
    assert len(set(np.round(fractions / fractions[0], 6))) == m


def test_a_row_whose_scale_one_channel_sets_gets_finer(tmp_path: Path) -> None:
    """As DistilBERT's [CLS] row: one channel far larger than the rest in one row only."""
    model = _norm_graph(outlier=1.0, bias_gelu=True)
    g = model.graph
    emb = next(i for i in g.initializer if i.name == "emb")
    table = numpy_helper.to_array(emb).copy()
    table[0, :] *= 0.05  # token 0: small everywhere ...
    table[0, 5] = 30.0  # ... except channel 5: after the LayerNorm, ~20x its other channels
    emb.CopyFrom(numpy_helper.from_array(table, "emb"))
    calib = _calibrated(model, tmp_path)
    ids = np.random.default_rng(8).integers(1, VOCAB, size=(16, 9))
    ids[:, 0] = 0
    # The first GEMM's output on that row.
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, None)
    model.graph.output.append(h)
    h_ref = _run(model, ids)[-1]
    errors = {}
    whole = replace(balanced_refine(), split=None)
    for name, refine in (("split", balanced_refine()), ("whole", whole)):
        # The exact twin: the same integers without AVX2's u8*s8 saturation (w8a8 splits).
        twin = _rewritten(model, calib, refine)
        passes.to_exact_twin(twin)
        h_int8 = _run(twin, ids)[-1]
        errors[name] = np.abs(h_int8[:, 0] - h_ref[:, 0]).mean()
    assert errors["split"] < errors["whole"] / 1.5, errors


def test_no_split_where_the_channels_are_kept_in_fp32(tmp_path: Path) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    high = targets.FIDELITY["high"]
    plan = planning.plan_input("norm", calib.inputs["x"], [np.ones((K, 1))], high)
    assert plan.apart is not None and plan.split is None
    report: dict[str, Any] = {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    per_token.rewrite(out, targets.RECIPES["w7a8"], calib, high, report=report)
    assert "channels_split" not in report
    assert not any(n.op_type == "Concat" for n in out.graph.node)


def test_chains_of_additions_become_one_sum_of_the_same_terms() -> None:
    # y = ((a + b) + c) + d, and e = (a + b) read twice: only what nothing else reads is folded.
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "c"], ["abc"]),
        helper.make_node("Add", ["abc", "bias"], ["y"]),
        helper.make_node("Add", ["a", "c"], ["ac"]),
        helper.make_node("Add", ["ac", "ac"], ["e"]),
    ]
    shape: list[str | int] = ["r", K]
    graph = helper.make_graph(
        nodes,
        "adds",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "abc"],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "e")],
        [numpy_helper.from_array(np.arange(K, dtype=np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    kept = passes.sum_chains(list(folded.graph.node), {"y", "e"})
    del folded.graph.node[:]
    folded.graph.node.extend(kept)
    assert [(n.op_type, list(n.input)) for n in kept] == [
        ("Sum", ["a", "b", "c", "bias"]),
        ("Add", ["a", "c"]),
        ("Add", ["ac", "ac"]),
    ]
    rng = np.random.default_rng(0)
    feeds = {n: rng.normal(size=(3, K)).astype(np.float32) for n in "abc"}
    want = _session(model).run(None, feeds)
    got = _session(folded).run(None, feeds)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_split_is_for_8_bit_weights_only(tmp_path: Path) -> None:
    # With the AVX2-safe recipes' 7-bit weights it did not pay on unseen text.
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    for recipe, split in (("w8a8", True), ("w7a8", False), ("mixed", False)):
        report: dict[str, Any] = {}
        out = onnx.ModelProto()
        out.CopyFrom(model)
        per_token.rewrite(out, targets.RECIPES[recipe], calib, balanced_refine(), report=report)
        assert bool(report.get("channels_split")) is split, recipe
        assert any(n.op_type == "Concat" for n in out.graph.node) is split, recipe


def test_with_7_bit_weights_the_feed_forward_input_keeps_channels_in_fp32(tmp_path: Path) -> None:
    # Refinements.ffn_apart: where the LayerNorm-output GEMMs have the AVX2-safe 7-bit weights,
    # the input of the GEMM that feeds the GELU keeps its largest channels (the outlier among
    # them) out of the integer GEMM, in place of the split; with 8-bit weights, the split.
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    ids = np.random.default_rng(4).integers(0, VOCAB, size=(6, 9))
    y_ref = _run(model, ids)[0]

    def fp32_channels(out: onnx.ModelProto) -> list[list[int]]:
        """The channels of the LayerNorm output "x" that an fp32 MatMul reads."""
        gathers = {n.output[0]: n for n in out.graph.node if n.op_type == "Gather"}
        inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
        reads_x = {name for name, g in gathers.items() if g.input[0] == "x"}
        return [
            sorted(inits[gathers[n.input[0]].input[1]].tolist())
            for n in out.graph.node
            if n.op_type == "MatMul" and n.input[0] in reads_x
        ]

    errors = {}
    for recipe, n in (("w7a8", 0), ("w7a8", balanced_refine().ffn_apart), ("w8a8", 3)):
        out = _rewritten(model, calib, replace(balanced_refine(), ffn_apart=n), recipe=recipe)
        kept = fp32_channels(out)
        if recipe == "w7a8" and n:
            assert len(kept) == 1 and len(kept[0]) == n and 5 in kept[0], kept
        else:
            assert kept == [], (recipe, n)
        errors[recipe, n] = float(np.abs(_run(out, ids)[0] - y_ref).mean())
    assert errors["w7a8", 3] < errors["w7a8", 0] / 1.5, errors

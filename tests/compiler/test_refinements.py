"""Calibration and what the per-token rewrite does with it (handler/compiler/calibrate.py,
targets.Refinements): statistics as numpy computes them, error-compensated weight rounding,
outlier channels kept in fp32, smoothing; still row-independent and AVX2-safe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from handler.compiler import (
    agreement,
    calibrate,
    emit,
    passes,
    patterns,
    per_token,
    planning,
    targets,
    weights,
)
from handler.compiler.graph import GELU_MIN
from handler.compiler.pipeline import BuildOptions, build
from handler.errors import BuildError
from tests import tiny
from tests.compiler.test_per_token import H, K, _gemm_operand_maxima, _graph, _run, _session

VOCAB = 50


class _Ids:
    """A tokenizer stand-in for calibrate.collect: each 'text' is a row of token ids."""

    def encode(self, texts: list[Any]) -> list[Any]:
        return [_Row(t) for t in texts]

    def pad(self, batch: list[Any], names: list[str]) -> dict[str, np.ndarray[Any, Any]]:
        assert names == ["ids"] and len(batch) == 1
        return {"ids": np.asarray([batch[0].ids], dtype=np.int64)}


class _Row:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.length = len(ids)


def _norm_graph(
    outlier: float = 40.0,
    seed: int = 0,
    bias_gelu: bool = False,
    offset: float = 0.0,
) -> onnx.ModelProto:
    """ids -> embedding -> LayerNorm (one channel's gamma `outlier` times the rest, as a
    DistilBERT LayerNorm output's outlier channel; another's beta `offset`, a channel whose
    offset is larger than its spread) -> MatMul -> Gelu -> MatMul; the LayerNorm output is
    also an output of its own (the residual path, which must stay exact)."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(K, dtype=np.float32)
    gamma[5] = outlier
    beta = rng.normal(size=K).astype(np.float32) * 0.1
    beta[9] += offset
    inits = [
        numpy_helper.from_array(rng.normal(size=(VOCAB, K)).astype(np.float32), "emb"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(beta, "beta"),
        numpy_helper.from_array((rng.normal(size=(K, H)) / np.sqrt(K)).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.normal(size=(H, K)) / np.sqrt(H)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["x"], name="ln", axis=-1),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="down"),
    ]
    if bias_gelu:  # as ORT's fusion writes a Linear layer followed by GELU
        inits.append(numpy_helper.from_array(rng.normal(size=H).astype(np.float32), "b1"))
        nodes[3] = helper.make_node(
            "BiasGelu", ["h", "b1"], ["g"], name="gelu", domain="com.microsoft"
        )
    graph = helper.make_graph(
        nodes,
        "tiny_norm",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", K]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K]),
        ],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


def _texts(seed: int = 7, n: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, VOCAB, size=int(rng.integers(3, 12)))) for _ in range(n)]


def _calibrated(model: onnx.ModelProto, tmp_path: Path) -> calibrate.Calibration:
    path = tmp_path / "fp32.onnx"
    onnx.save(model, str(path))
    texts: Any = _texts()
    return calibrate.collect(path, _Ids(), texts)  # type: ignore[arg-type]


HIGH = targets.FIDELITY["high"]


def _muls(model: onnx.ModelProto) -> int:
    """Mul nodes over activations: not the [rows, 1] scales QuantizeLinear takes (opset 21)."""
    return sum(
        n.op_type == "Mul" and not n.output[0].endswith("/row_step") for n in model.graph.node
    )


def _rewritten(
    model: onnx.ModelProto,
    recipe: str,
    calib: Any = None,
    refine: targets.Refinements = targets.REFINEMENTS,
) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    per_token.rewrite(out, targets.RECIPES[recipe], calib, refine)
    return out


def test_statistics_are_those_of_the_gemm_inputs_over_real_tokens(tmp_path: Path) -> None:
    model = _graph()
    calib = _calibrated(model, tmp_path)
    # Every input of a MatMul with a constant weight: the embedding (2 consumers) and the GELU.
    assert set(calib.inputs) == {"x", "g"}
    texts = _texts()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in ("x", "g"):
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = _session(probe)
    seen: dict[str, list[np.ndarray[Any, Any]]] = {"x": [], "g": []}
    for ids in texts:
        outs = dict(
            zip([o.name for o in sess.get_outputs()], sess.run(None, {"ids": [ids]}), strict=True)
        )
        for name in seen:
            seen[name].append(outs[name].reshape(-1, outs[name].shape[-1]).astype(np.float64))
    assert calib.texts == 40 and calib.tokens == sum(len(t) for t in texts)
    for name, parts in seen.items():
        x = np.concatenate(parts)
        stats = calib.inputs[name]
        assert stats.rows == x.shape[0]
        np.testing.assert_allclose(stats.absmax, np.abs(x).max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats.hessian, x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)
        c = x.mean(axis=0) + 0.25
        np.testing.assert_allclose(stats.centred_absmax(c), np.abs(x - c).max(axis=0), rtol=1e-6)
        xc = x - c
        expected = xc.T @ xc / x.shape[0]  # (the gram is summed in float32: scale the atol)
        atol = 1e-5 * float(np.abs(expected).max())
        np.testing.assert_allclose(stats.centred_hessian(c), expected, rtol=1e-4, atol=atol)


def test_error_compensated_rounding_beats_nearest_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    k, n = 64, 24
    mix = rng.normal(size=(k, k))
    x = rng.normal(size=(4000, k)) @ mix  # strongly correlated channels, as real activations
    w = rng.normal(size=(k, n)).astype(np.float32)
    hessian = x.T @ x / x.shape[0]
    for qmax in (127, 63):
        nearest, scale = weights.quantize_weight(w, qmax)
        gptq, scale_g = weights.quantize_weight(w, qmax, hessian)
        assert np.array_equal(scale, scale_g)  # the same scales: only the integers differ
        assert gptq.dtype == np.int8 and int(np.abs(gptq.astype(np.int32)).max()) <= qmax

        def err(q: np.ndarray[Any, Any], s: np.ndarray[Any, Any] = scale) -> float:
            return float(np.square(x @ (w - q.astype(np.float64) * s)).mean())

        assert err(gptq) < 0.7 * err(nearest), qmax


def test_indefinite_second_moments_fall_back_to_more_damping_or_nearest() -> None:
    # Summed in float32 or centred, second moments can come out slightly indefinite.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 5)).astype(np.float32)
    nearest, _ = weights.quantize_weight(w, 63)
    slightly = np.array([[1.0, 1.5], [1.5, 1.0]])  # one eigenvalue -0.5: damping fixes it
    q, _ = weights.quantize_weight(w, 63, slightly)
    assert q.dtype == np.int8 and int(np.abs(q.astype(np.int32)).max()) <= 63
    hopeless = np.array([[1.0, 100.0], [100.0, 1.0]])
    q, _ = weights.quantize_weight(w, 63, hopeless)
    assert np.array_equal(q, nearest)


def _exact(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an int8 graph as its exact twin (passes.to_exact_twin): host-independent."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    passes.to_exact_twin(twin)
    return twin


@pytest.mark.parametrize(
    ("recipe", "bias_gelu"), [("w7a8", False), ("w8a8", False), ("w7a8", True)]
)
def test_outlier_channels_in_fp32_stop_setting_the_rows_scale(
    recipe: str, bias_gelu: bool, tmp_path: Path
) -> None:
    model = _norm_graph(bias_gelu=bias_gelu)
    calib = _calibrated(model, tmp_path)
    refined = _rewritten(model, recipe, calib, HIGH)
    plan = planning.plan_input("norm", calib.inputs["x"], [np.ones((K, 1))], HIGH)
    assert plan.apart is not None and 5 in plan.apart.tolist()
    ops = [n.op_type for n in refined.graph.node]
    # LayerNorm and GELU outputs: their largest channels gathered, multiplied by fp32 rows.
    assert ops.count("MatMulIntegerToFloat") == 2 and ops.count("MatMul") == 2
    # The GELU output's fp32 channels are gathered from it, and the Add that shifts it for the
    # quantiser shifts them far below 0 (no Mul over the output to mask them, no second GELU).
    # Gelu and BiasGelu alike become the one FastGelu (tanh_gelu).
    assert [op for op in ops if "Gelu" in op] == ["FastGelu"]
    assert _muls(refined) == 2 + 1  # 2 row scales + the LayerNorm output's mask (its smoothing)
    shifts = [_init(refined, n.input[1]) for n in refined.graph.node if n.name.endswith("/shifted")]
    assert len(shifts) == 1 and shifts[0].shape == (H,)
    assert 0 < int((shifts[0] == emit.GELU_APART_SHIFT).sum()) <= HIGH.apart
    assert np.all((shifts[0] == emit.GELU_APART_SHIFT) | (shifts[0] == GELU_MIN))
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(3, 7))
    # Each int8 graph as its exact twin: the same integers, computed as a CPU whose u8*s8 sums
    # never saturate would (w8a8's full-range weights saturate on AVX2 without VNNI).
    (y_ref, _), (y_plain, x_plain), (y_ref2, x_refined) = (
        _run(model, ids),
        _run(_exact(_rewritten(model, recipe)), ids),
        _run(_exact(refined), ids),
    )
    assert np.array_equal(x_refined, x_plain)  # the residual path is untouched
    plain_err = np.abs(y_plain - y_ref).max()
    refined_err = np.abs(y_ref2 - y_ref).max()
    assert refined_err < plain_err / 3, (plain_err, refined_err)


def test_balanced_fidelity_keeps_gelu_channels_apart_and_smooths_layernorm_outputs(
    tmp_path: Path,
) -> None:
    model = _norm_graph(bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    balanced = _rewritten(model, "w7a8", calib)
    ops = [n.op_type for n in balanced.graph.node]
    # Two fp32 GEMMs: the GELU output's channels, gathered from it (no masking pass over the
    # GELU output), and the LayerNorm output's (7-bit weights: Refinements.ffn_apart); the
    # LayerNorm output is divided by its smoothing factors (one Mul) before quantisation.
    assert ops.count("MatMul") == 2 and ops.count("FastGelu") == 1
    assert _muls(balanced) == 2 + 1
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(3, 7))
    y_ref = _run(model, ids)[0]
    plain_err = np.abs(_run(_rewritten(model, "w7a8"), ids)[0] - y_ref).max()
    balanced_err = np.abs(_run(balanced, ids)[0] - y_ref).max()
    assert balanced_err < plain_err / 2, (plain_err, balanced_err)
    # The GELU output's fp32 channels are quantised to 0, so they do not set the row's scale.
    apart = planning.plan_input(
        "gelu", calib.inputs["g"], [np.ones((H, 1))], balanced_refine()
    ).apart
    assert apart is not None
    plain = _rewritten(model, "w7a8")
    q = {}
    for name, m in (("balanced", balanced), ("plain", plain)):
        node = next(
            n for n in m.graph.node if n.op_type == "QuantizeLinear" and "shifted" in n.input[0]
        )
        m.graph.output.append(
            helper.make_tensor_value_info(node.output[0], TensorProto.UINT8, None)
        )
        q[name] = _run(m, ids)[-1]
    assert np.all(q["balanced"][..., apart] == 0) and np.any(q["plain"][..., apart] != 0)


def _residual_graph(offset: float = 12.0, gemm_bias: bool = True) -> onnx.ModelProto:
    """As a post-LayerNorm transformer's feed-forward block: x = LayerNorm(embedding) (channel
    9's beta `offset`: a channel far from zero on every token), h = GELU(x W1 + b1) W2 + b2,
    output h + x (the residual)."""
    model = _norm_graph(outlier=1.0, bias_gelu=gemm_bias, offset=offset)
    g = model.graph
    rng = np.random.default_rng(3)
    g.initializer.append(numpy_helper.from_array(rng.normal(size=K).astype(np.float32), "b2"))
    g.node.extend(
        [
            helper.make_node("Add", ["y", "b2"], ["yb"], name="down_bias"),
            helper.make_node("Add", ["yb", "x"], ["r"], name="residual"),
        ]
    )
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", "s", K]))
    return model


def _init(model: onnx.ModelProto, name: str) -> np.ndarray[Any, Any]:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def test_centring_moves_layernorm_offsets_into_the_biases(tmp_path: Path) -> None:
    model = _residual_graph()
    calib = _calibrated(model, tmp_path)
    plan = planning.plan_input(
        "norm", calib.inputs["x"], [np.ones((K, 1))], balanced_refine(), True
    )
    assert plan.offset is not None and abs(plan.offset[9] - 12.0) < 1.0
    # (Without Refinements.ffn_apart, whose fp32 channels keep their own values.)
    refine = replace(balanced_refine(), ffn_apart=0)
    centred = _rewritten(model, "w7a8", calib, refine)
    uncentred = _rewritten(model, "w7a8", calib, replace(refine, centre=False))
    # No node added: the LayerNorm writes y - c itself, the residual gets c back from the
    # sublayer's bias and the GEMM's result gets c W1 back from its own.
    assert [n.op_type for n in centred.graph.node] == [n.op_type for n in uncentred.graph.node]
    c = plan.offset
    np.testing.assert_allclose(_init(centred, "beta"), _init(model, "beta") - c, atol=1e-5)
    # (b2 also takes the GELU shift's constant, as in the uncentred rewrite.)
    np.testing.assert_allclose(_init(centred, "b2") - _init(uncentred, "b2"), c, atol=1e-4)
    b1, b1_before, w1 = _init(centred, "b1"), _init(model, "b1"), _init(model, "w1")
    np.testing.assert_allclose(b1 - b1_before, c @ w1, rtol=1e-4, atol=1e-5)
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(3, 7))
    r_ref = _run(model, ids)[0]
    # Centring alone (no smoothing, no fp32 channels), against the same without it.
    alone = targets.Refinements(smooth_alpha=None, apart=0, ffn_apart=0)
    r_c = _run(_rewritten(model, "w7a8", calib, alone), ids)[0]
    r_u = _run(_rewritten(model, "w7a8", calib, replace(alone, centre=False)), ids)[0]
    err_c, err_u = np.abs(r_c - r_ref).mean(), np.abs(r_u - r_ref).mean()
    assert err_c < err_u / 2, (err_c, err_u)


@pytest.mark.parametrize("why", ["graph output", "no gemm bias"])
def test_no_centring_where_the_offset_cannot_be_given_back(why: str, tmp_path: Path) -> None:
    # The LayerNorm's output is also an output of the graph (it must stay as it was), or the
    # GEMM has no bias of its own to take c W back.
    if why == "graph output":
        model = _norm_graph(outlier=1.0, bias_gelu=True, offset=12.0)
    else:
        model = _residual_graph(gemm_bias=False)
    calib = _calibrated(model, tmp_path)
    rewritten = _rewritten(model, "w7a8", calib)
    np.testing.assert_array_equal(_init(rewritten, "beta"), _init(model, "beta"))
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(2, 5))
    np.testing.assert_allclose(_run(rewritten, ids)[0], _run(model, ids)[0], atol=0.5)


def _attention_graph(offset: float = 12.0, seed: int = 0) -> onnx.ModelProto:
    """ids -> embedding -> Q, K, V projections (V's channel 3 offset by `offset` on every
    token) -> MultiHeadAttention -> output projection with a bias."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 1.0) -> Any:
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    bv = rng.normal(size=K).astype(np.float32) * 0.1
    bv[3] += offset
    inits = [
        w("emb", VOCAB, K),
        *(w(f"w{p}", K, K, scale=K**-0.5) for p in "qkvo"),
        *(w(f"b{p}", K, scale=0.1) for p in "qko"),
        numpy_helper.from_array(bv, "bv"),
    ]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["x"], name="embed")]
    for p in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_mm"),
            helper.make_node("Add", [f"{p}0", f"b{p}"], [p], name=f"{p}_add"),
        ]
    nodes += [
        helper.make_node(
            "MultiHeadAttention", ["q", "k", "v"], ["a"], domain="com.microsoft", num_heads=2
        ),
        helper.make_node("MatMul", ["a", "wo"], ["o0"], name="o_mm"),
        helper.make_node("Add", ["o0", "bo"], ["y"], name="o_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_attention",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", K])],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


@pytest.mark.parametrize(
    ("axes", "steps", "keeps_rows"),
    [([1], None, True), ([0, 1], [1, 1], True), ([-1], None, False), ([1], [2], False)],
)
def test_offsets_pass_only_through_slices_that_keep_whole_rows(
    axes: list[int], steps: list[int] | None, keeps_rows: bool
) -> None:
    inits = {
        name: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
        for name, v in (("st", [0] * len(axes)), ("en", [1] * len(axes)), ("ax", axes))
    }
    inputs = ["x", "st", "en", "ax"]
    if steps is not None:
        inits["sp"] = numpy_helper.from_array(np.array(steps, dtype=np.int64), "sp")
        inputs.append("sp")
    node = helper.make_node("Slice", inputs, ["y"])
    assert patterns.row_slice(node, inits) is keeps_rows


def test_attention_outputs_are_centred_through_the_value_projection(tmp_path: Path) -> None:
    model = _attention_graph()
    calib = _calibrated(model, tmp_path)
    centred = _rewritten(model, "w7a8", calib)
    plain = _rewritten(model, "w7a8", calib, targets.Refinements(centre=False))
    ops = [n.op_type for n in centred.graph.node]
    assert ops == [n.op_type for n in plain.graph.node]  # no node added
    after = {i.name: numpy_helper.to_array(i) for i in centred.graph.initializer}
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    offset = calib.inputs["a"].mean
    # Q, K and V are one GEMM now: V's part of the merged bias carries -c, the output's +c Wo.
    merged = next(v for k, v in after.items() if k.endswith("/bias") and v.shape == (3 * K,))
    np.testing.assert_allclose(merged[2 * K :], before["bv"] - offset, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(merged[: 2 * K], np.concatenate([before["bq"], before["bk"]]))
    np.testing.assert_allclose(after["bo"], before["bo"] + offset @ before["wo"], rtol=1e-4)
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(3, 7))
    y_ref = _run(model, ids)[0]
    err_c = np.abs(_run(centred, ids)[0] - y_ref).mean()
    err_u = np.abs(_run(plain, ids)[0] - y_ref).mean()
    assert err_c < err_u / 2, (err_c, err_u)


def test_attention_smoothing_goes_into_the_value_columns(tmp_path: Path) -> None:
    model = _attention_graph(offset=0.0)
    calib = _calibrated(model, tmp_path)
    refine = targets.Refinements(centre=False, attention_alpha=0.5)
    smoothed = _rewritten(model, "w8a8", calib, refine)
    plain = _rewritten(model, "w8a8", calib, targets.Refinements(centre=False))
    assert [n.op_type for n in smoothed.graph.node] == [n.op_type for n in plain.graph.node]
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(2, 6))
    y_ref = _run(model, ids)[0]
    # Exact in fp32: the answers stay as close to fp32 as the plain rewrite's.
    err_s = np.abs(_run(smoothed, ids)[0] - y_ref).max()
    assert err_s < 2 * np.abs(_run(plain, ids)[0] - y_ref).max() + 1e-3


def balanced_refine() -> targets.Refinements:
    return targets.FIDELITY["balanced"]


@pytest.mark.parametrize("fidelity", sorted(targets.FIDELITY))
def test_refined_rewrite_keeps_every_row_its_own(fidelity: str, tmp_path: Path) -> None:
    model = _norm_graph(bias_gelu=True)
    refine = targets.FIDELITY[fidelity]
    refined = _rewritten(model, "w7a8", _calibrated(model, tmp_path), refine)
    rng = np.random.default_rng(2)
    alone = rng.integers(0, VOCAB, size=(1, 5))
    batch = rng.integers(0, VOCAB, size=(4, 9))
    batch[2, :5] = alone[0]
    (y_alone, _), (y_batch, _) = _run(refined, alone), _run(refined, batch)
    assert np.array_equal(y_batch[2, :5], y_alone[0])


def test_refined_avx2_safe_recipe_never_feeds_a_pair_sum_that_saturates(tmp_path: Path) -> None:
    model = _norm_graph(outlier=400.0, bias_gelu=True)
    refined = _rewritten(model, "w7a8", _calibrated(model, tmp_path), HIGH)
    ids = np.concatenate([np.arange(VOCAB), [1, 2, 3]]).reshape(1, -1)
    per_token_probe = refined
    assert max(_gemm_operand_maxima(per_token_probe, ids)) <= 32767


def test_calibration_text_is_never_the_gates_report_text() -> None:
    report, _ = agreement.default_texts()
    calib, where = agreement.calibration_texts()
    assert len(calib) >= 1000 and not set(calib) & set(report)
    assert "docstrings" in where


@pytest.mark.parametrize("fidelity", sorted(targets.FIDELITY))
def test_a_build_records_its_fidelity_and_calibration(fidelity: str, tmp_path: Path) -> None:
    hub = tiny.make_hub_folder(tmp_path / "hub")
    eval_tsv = tiny.write_eval(tmp_path / "eval.tsv", None)
    manifest = build(
        BuildOptions(model=str(hub), out=tmp_path / "out", eval_path=eval_tsv, fidelity=fidelity)
    )
    refined = manifest["quantization"]["refinements"]
    expected = targets.FIDELITY[fidelity]
    assert refined["fidelity"] == fidelity
    assert refined["fp32_channels_per_input"] == expected.apart
    assert refined["weight_rounding"].startswith("GPTQ")
    # The selection part of the labelled data and the docstrings the gate does not report on.
    assert refined["calibration"]["texts"] >= len(agreement.calibration_texts()[0])
    assert refined["calibration"]["tokens"] > refined["calibration"]["texts"]
    # What was done, not what could have been: the tiny model (mean-pooled embeddings, a
    # linear head) has no LayerNorm or attention output to centre. (The stand-in's: see
    # tests/compiler/test_build_standin.py.)
    assert refined["inputs_centred"] == {}


def test_an_unknown_fidelity_is_refused_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="balanced, high"):
        build(BuildOptions(model=str(tmp_path), out=tmp_path / "out", fidelity="max"))


def _gelu_values(model: onnx.ModelProto, ids: np.ndarray[Any, Any]) -> tuple[Any, Any]:
    """(the GELU's input with its bias, the GELU's output) of `model` on `ids`."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    gelu = next(n for n in probe.graph.node if "Gelu" in n.op_type)
    pre = gelu.input[0]
    probe.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        for name in (pre, gelu.output[0])
    )
    x, g = _session(probe).run([pre, gelu.output[0]], {"ids": ids})
    if len(gelu.input) > 1 and gelu.input[1]:
        x = x + _init(probe, gelu.input[1])
    return np.asarray(x, dtype=np.float64), np.asarray(g, dtype=np.float64)


@pytest.mark.parametrize("form", ["Gelu", "BiasGelu", "onnx"])
def test_gelus_become_their_tanh_approximation(form: str, tmp_path: Path) -> None:
    # The property: with tanh_gelu the quantised graph's GELU computes
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), which is within 4.7e-4 of x * Phi(x);
    # without it, the GELU is left as it was (erf).
    import math

    model = _norm_graph(bias_gelu=form == "BiasGelu")
    if form == "onnx":  # ONNX's own Gelu (opset 20)
        gelu = next(n for n in model.graph.node if n.op_type == "Gelu")
        gelu.domain = ""
        del model.opset_import[:]
        model.opset_import.extend(
            [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
        )
    calib = _calibrated(model, tmp_path)
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(4, 9))
    assert balanced_refine().tanh_gelu
    # Every recipe: the 8-bit weights and the AVX2-safe 7-bit ones (Refinements.ffn_apart).
    for recipe, tanh in (("w8a8", True), ("w8a8", False), ("w7a8", True), ("w7a8", False)):
        refine = replace(balanced_refine(), tanh_gelu=tanh)
        rewritten = _rewritten(model, recipe, calib, refine)
        gelus = [n for n in rewritten.graph.node if "Gelu" in n.op_type]
        assert len(gelus) == 1
        x, g = _gelu_values(rewritten, ids)
        approx = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        exact = 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
        assert float(np.abs(approx - exact).max()) <= 4.8e-4
        if tanh:
            assert gelus[0].op_type == "FastGelu" or (
                gelus[0].op_type == "Gelu"
                and helper.get_attribute_value(gelus[0].attribute[0]) == b"tanh"
            )
            np.testing.assert_allclose(g, approx, atol=2e-6, rtol=2e-6)
        else:
            assert gelus[0].op_type == model.graph.node[3].op_type
            np.testing.assert_allclose(g, exact, atol=2e-6, rtol=2e-6)
            # The two differ where x is away from 0 (else this test could not tell them apart).
            assert float(np.abs(approx - exact).max()) > 1e-5

"""The Hadamard rotation of LayerNorm outputs before they are quantised
(targets.Refinements.rotate): exact in fp32, rows independent, finer where one channel sets
a row's scale, and in place of the smoothing, split and fp32 channels it supersedes.

The suite's tiny graphs are 32 channels wide, narrower than the default block (64): these
tests rotate in blocks of 8, so that the width holds 4 of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from handler.compiler import per_token, planning, targets, weights
from tests.compiler.test_per_token import K, _run
from tests.compiler.test_refinements import VOCAB, _calibrated, _norm_graph

BLOCK = 8
ROTATED = replace(targets.FIDELITY["balanced"], rotate=BLOCK)
UNROTATED = replace(targets.FIDELITY["balanced"], rotate=None)


def _rewritten(
    model: onnx.ModelProto, calib: Any, refine: targets.Refinements, recipe: str = "w8a8"
) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    per_token.rewrite(out, targets.RECIPES[recipe], calib, refine)
    return out


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_the_hadamard_matrix_is_orthonormal_with_equal_magnitudes(n: int) -> None:
    h = weights.hadamard(n)
    np.testing.assert_allclose(h @ h.T, np.eye(n), atol=1e-12)
    # Every entry +-1/sqrt(n): a lone large value is spread evenly over its block.
    np.testing.assert_allclose(np.abs(h), 1 / np.sqrt(n))


def test_a_block_that_is_not_a_power_of_two_is_refused() -> None:
    with pytest.raises(ValueError, match="order 12"):
        weights.hadamard(12)


def test_rotation_applies_only_where_the_width_holds_whole_blocks() -> None:
    assert planning.rotatable(ROTATED, K)
    assert not planning.rotatable(replace(ROTATED, rotate=64), K)  # 32 channels: smoothed
    assert not planning.rotatable(UNROTATED, K)


def test_rotating_is_exact_in_fp32_and_replaces_smoothing_and_the_split(tmp_path: Path) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True, offset=3.0)
    calib = _calibrated(model, tmp_path)
    stats = calib.inputs["x"]
    w = np.random.default_rng(5).normal(size=(K, 12))
    plan = planning.plan_input("norm", stats, [w], ROTATED, centrable=True)
    assert plan.rotation is not None and plan.rotation.shape == (BLOCK, BLOCK)
    assert plan.smooth is None and plan.split is None and plan.offset is not None
    # What the quantiser sees, (x - c) R, times what the GEMM's integers approximate, R^T W.
    full = weights.block_rotation(plan.rotation, K)
    x = np.random.default_rng(6).normal(size=(7, K)) * 3
    np.testing.assert_allclose(((x - plan.offset) @ full) @ (full.T @ w), (x - plan.offset) @ w)
    # The second moments GPTQ rounds against are those of the rotated input.
    assert plan.hessian is not None
    plain = planning.plan_input(
        "norm", stats, [w], replace(UNROTATED, smooth_alpha=None), centrable=True
    )
    assert plain.hessian is not None
    np.testing.assert_allclose(plan.hessian, full.T @ plain.hessian @ full, rtol=1e-9, atol=1e-9)
    # Other inputs are never rotated.
    for kind in ("gelu", "other"):
        assert planning.plan_input(kind, stats, [w], ROTATED).rotation is None


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_the_graph_rotates_each_layernorm_output_once_with_one_shared_shape(
    tmp_path: Path,
) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    rotated = _rewritten(model, calib, ROTATED)
    ops = _ops(rotated)
    # LayerNorm output: Shape, Reshape, MatMul by the block, Reshape. No smoothing Mul, no
    # split's Gather and Concat; the GELU output keeps its fp32 channels (one Gather).
    assert ops.count("Shape") == 1 and ops.count("Reshape") == 2
    assert "Concat" not in ops and ops.count("Gather") == 2  # the embedding and GELU's apart
    inits = {i.name: numpy_helper.to_array(i) for i in rotated.graph.initializer}
    shapes = [inits[n.input[1]].shape for n in rotated.graph.node if n.op_type == "MatMul"]
    assert sorted(shapes) == [(4, K), (BLOCK, BLOCK)]  # GELU's 4 fp32 channels; the rotation
    assert _ops(_rewritten(model, calib, UNROTATED)).count("Reshape") == 0


def test_with_seven_bit_weights_rotation_takes_the_place_of_the_fp32_channels(
    tmp_path: Path,
) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    calib = _calibrated(model, tmp_path)
    reports: dict[str, dict[str, Any]] = {}
    for name, refine in (("rotated", ROTATED), ("unrotated", UNROTATED)):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        reports[name] = {}
        per_token.rewrite(out, targets.RECIPES["w7a8"], calib, refine, report=reports[name])
    # The feed-forward input keeps 3 channels in fp32 only where it is not rotated.
    assert reports["unrotated"]["inputs_with_fp32_channels"]["layernorm outputs"] == 1
    assert "layernorm outputs" not in reports["rotated"]["inputs_with_fp32_channels"]


@pytest.mark.parametrize("recipe", ["w8a8", "w7a8"])
def test_rotated_rows_stay_independent_and_near_fp32(recipe: str, tmp_path: Path) -> None:
    model = _norm_graph(outlier=40.0, bias_gelu=True)
    rotated = _rewritten(model, _calibrated(model, tmp_path), ROTATED, recipe)
    rng = np.random.default_rng(2)
    alone = rng.integers(0, VOCAB, size=(1, 5))
    batch = rng.integers(0, VOCAB, size=(4, 9))
    batch[2, :5] = alone[0]
    (y_alone, x_alone), (y_batch, _) = _run(rotated, alone), _run(rotated, batch)
    assert np.array_equal(y_batch[2, :5], y_alone[0])  # batch-mates change nothing
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    per_token.rewrite(plain, targets.RECIPES[recipe])
    assert np.array_equal(x_alone, _run(plain, alone)[1])  # the residual path is untouched
    y_ref = _run(model, alone)[0]
    assert np.abs(y_alone - y_ref).max() < 0.05 * np.abs(y_ref).max()


def test_a_row_whose_scale_one_channel_sets_gets_finer(tmp_path: Path) -> None:
    """As DistilBERT's [CLS] row: one channel far larger than the rest in one row only. The
    rotation spreads it over its block, so the row's other channels round on a finer grid."""
    model = _norm_graph(outlier=1.0, bias_gelu=True)
    g = model.graph
    emb = next(i for i in g.initializer if i.name == "emb")
    table = numpy_helper.to_array(emb).copy()
    table[0, :] *= 0.05
    table[0, 5] = 30.0
    emb.CopyFrom(numpy_helper.from_array(table, "emb"))
    calib = _calibrated(model, tmp_path)
    ids = np.random.default_rng(8).integers(1, VOCAB, size=(16, 9))
    ids[:, 0] = 0
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    h_ref = _run(model, ids)[-1]
    errors = {}
    plain = replace(UNROTATED, smooth_alpha=None, split=None)
    whole = replace(ROTATED, rotate=K)  # one block: the channel spread over all 32
    for name, refine in (("rotated", whole), ("plain", plain)):
        h_int8 = _run(_rewritten(model, calib, refine), ids)[-1]
        errors[name] = np.abs(h_int8[:, 0] - h_ref[:, 0]).mean()
    assert errors["rotated"] < errors["plain"] / 1.5, errors


def test_the_manifest_records_the_rotation() -> None:
    assert targets.FIDELITY["balanced"].rotate == 64
    described = ROTATED.describe(_NoCalibration())
    assert described["hadamard_rotation_on_layernorm_outputs"] == {"block": BLOCK}
    assert UNROTATED.describe(_NoCalibration())["hadamard_rotation_on_layernorm_outputs"] is None


class _NoCalibration:
    def describe(self) -> dict[str, Any]:
        return {}

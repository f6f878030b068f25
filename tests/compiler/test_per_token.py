"""The per-token int8 rewrite on small self-made graphs: numbers, row independence, AVX2 safety,
and the default artifact on a CPU without VNNI (qemu-user -cpu Haswell, where installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from handler.compiler import passes, per_token, targets
from handler.inference import Classifier

K, H = 32, 48


def _graph(seed: int = 0, vocab: int = 50) -> onnx.ModelProto:
    """ids -> embedding -> MatMul -> Gelu -> MatMul, and a second MatMul on the embedding."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab, K)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.normal(size=(K, H)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(H, K)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(K, K)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["x"], name="embed"),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="down"),
        helper.make_node("MatMul", ["x", "w3"], ["z"], name="side"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", K]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", "s", K]),
        ],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, ids: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    return list(_session(model).run(None, {"ids": ids}))


def _quantised(name: str, exact_twin: bool = False) -> onnx.ModelProto:
    model = _graph()
    assert per_token.rewrite(model, targets.RECIPES[name]) == 3
    if exact_twin:
        assert passes.to_exact_twin(model) == 3
    return model


@pytest.mark.parametrize("name", sorted(targets.RECIPES))
def test_rewrite_stays_close_to_fp32(name: str) -> None:
    ids = np.random.default_rng(1).integers(0, 50, size=(3, 7))
    ref = _run(_graph(), ids)
    got = _run(_quantised(name, exact_twin=True), ids)
    for r, g in zip(ref, got, strict=True):
        rel = np.abs(r - g).max() / np.abs(r).max()
        assert rel < 0.05, (name, rel)
    ops = {n.op_type for n in _quantised(name).graph.node}
    assert "MatMul" not in ops and {"MatMulIntegerToFloat", "QuantizeLinear"} <= ops


@pytest.mark.parametrize("name", sorted(targets.RECIPES))
def test_a_row_never_depends_on_other_rows_or_padding(name: str) -> None:
    model = _quantised(name)
    rng = np.random.default_rng(2)
    alone = rng.integers(0, 50, size=(1, 5))
    batch = rng.integers(0, 50, size=(4, 9))  # other texts, longer: the row is padded
    batch[2, :5] = alone[0]
    y_alone, z_alone = _run(model, alone)
    y_batch, z_batch = _run(model, batch)
    assert np.array_equal(y_batch[2, :5], y_alone[0])
    assert np.array_equal(z_batch[2, :5], z_alone[0])


def test_a_zero_row_gives_zeros_not_nan() -> None:
    model = _graph()
    emb = next(i for i in model.graph.initializer if i.name == "emb")
    table = numpy_helper.to_array(emb).copy()
    table[0] = 0.0
    emb.CopyFrom(numpy_helper.from_array(table, "emb"))
    per_token.rewrite(model, targets.RECIPES["w8a7"])
    _, z = _run(model, np.array([[0, 3]]))
    assert np.all(np.isfinite(z)) and np.all(z[0, 0] == 0.0)


def _gemm_operand_maxima(model: onnx.ModelProto, ids: np.ndarray[Any, Any]) -> list[int]:
    """For every integer GEMM: 2 * (largest uint8 activation it received) * max |weight|."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for q in {n.input[0] for n in gemms}:
        probe.graph.output.append(helper.make_tensor_value_info(q, TensorProto.UINT8, None))
    names = [o.name for o in probe.graph.output]
    values = dict(zip(names, _session(probe).run(None, {"ids": ids}), strict=True))
    return [
        2 * int(values[n.input[0]].max()) * int(np.abs(inits[n.input[1]].astype(np.int32)).max())
        for n in gemms
    ]


def test_avx2_safe_recipes_never_feed_a_pair_sum_that_saturates() -> None:
    # Extreme rows too: a huge embedding row, a zero row, one large outlier channel.
    model = _graph()
    emb = next(i for i in model.graph.initializer if i.name == "emb")
    table = numpy_helper.to_array(emb).copy()
    table[1] *= 1000.0
    table[2] = 0.0
    table[3, 5] = 500.0
    emb.CopyFrom(numpy_helper.from_array(table, "emb"))
    ids = np.concatenate([np.arange(50), [1, 2, 3]]).reshape(1, -1)
    for name, recipe in targets.RECIPES.items():
        quantised = onnx.ModelProto()
        quantised.CopyFrom(model)
        per_token.rewrite(quantised, recipe)
        worst = max(_gemm_operand_maxima(quantised, ids))
        if recipe.avx2_safe:
            assert worst <= 32767, name
        else:  # full range really does reach past int16 on these rows
            assert worst > 32767, name
    for name in targets.TARGETS["x86-avx2"].recipes:
        assert targets.RECIPES[name].avx2_safe, name


@pytest.mark.parametrize("name", ["mixed", "w8a7", "w7a8"])
def test_avx2_safe_recipes_equal_their_exact_twin_on_this_cpu(name: str) -> None:
    # The twin holds the same integers as u8u8, which no CPU saturates: equal to the bit.
    ids = np.random.default_rng(3).integers(0, 50, size=(2, 11))
    for a, b in zip(_run(_quantised(name), ids), _run(_quantised(name, True), ids), strict=True):
        assert np.array_equal(a, b)


def test_saturation_probe_matches_full_range_twin() -> None:
    # Where the probe says this CPU does not saturate, full range equals its twin exactly.
    ids = np.random.default_rng(4).integers(0, 50, size=(2, 11))
    native, twin = _run(_quantised("w8a8"), ids), _run(_quantised("w8a8", True), ids)
    same = all(np.array_equal(a, b) for a, b in zip(native, twin, strict=True))
    saturates = targets.host_saturates()
    assert same or saturates  # a difference can only come from saturation
    if not saturates:
        assert same


@pytest.mark.parametrize("kind", ["fp16", "int8"])
def test_embedding_table_is_stored_smaller_and_tied_tables_are_left(kind: str) -> None:
    model = _graph()
    per_token.rewrite(model, targets.RECIPES["w8a7"], embeddings=kind)
    names = {i.name: i for i in model.graph.initializer}
    assert "emb" not in names
    table = next(i for n, i in names.items() if n.endswith(f"/table_{kind}"))
    assert table.data_type == (TensorProto.FLOAT16 if kind == "fp16" else TensorProto.INT8)
    ids = np.random.default_rng(6).integers(0, 50, size=(2, 5))
    ref = _run(_graph(), ids)[1]
    got = _run(model, ids)[1]
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.05
    tied = _graph()
    tied.graph.node.append(helper.make_node("Identity", ["emb"], ["emb_copy"], name="tie"))
    tied.graph.output.append(helper.make_tensor_value_info("emb_copy", TensorProto.FLOAT, None))
    per_token.rewrite(tied, targets.RECIPES["w8a7"])
    assert "emb" in {i.name for i in tied.graph.initializer}


QEMU = shutil.which("qemu-x86_64")
HELD_OUT = [
    "A masterpiece: moving, funny and beautifully acted.",
    "A tedious, badly written waste of two hours.",
    "it 's a charming and often affecting journey . ",
    "The plot meanders, yet the lead performance is magnetic and the score soars.",
    "Not bad at all, though I expected more from the director of such fine earlier work.",
    "unflinchingly bleak and desperate ",
    "The printer driver installs, but the settings page never opens.",
]
# Largest softmax score difference allowed between an emulated Haswell and this host, end to end.
# Float kernels (LayerNorm, GELU, Softmax) differ by ISA in their last bits (AVX-512 vs AVX2:
# 1-3 ULP); where such a bit moves a value across a per-token rounding boundary the change
# propagates. Measured: up to 5e-4 on 120 held-out texts (AVX-512 VNNI host vs emulated Haswell),
# 7e-9 on these texts. 4x the measured maximum; the saturating full-range (x86-vnni) artifact
# moves these texts' scores by 5.1e-3 there, and fails the integer check in every GEMM.
CROSS_ISA_SCORE_TOLERANCE = 2e-3


def _gemm_activations(model_dir: Path, texts: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    """The uint8 activations each integer GEMM of the artifact receives for `texts` on this host,
    as [rows, K] per weight name, plus the largest value the GEMM's recipe allows in every
    column of one more row (the pair sums' worst case, whatever the text)."""
    clf = Classifier.from_dir(model_dir)
    model = onnx.load(str(model_dir / clf.config.model_file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    gemms = {n.input[1]: n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"}
    for a in {n.input[0] for n in gemms.values()}:
        model.graph.output.append(helper.make_tensor_value_info(a, TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rows: dict[str, list[np.ndarray[Any, Any]]] = {w: [] for w in gemms}
    for enc in clf.tokenizer.encode(texts):
        feed = clf.tokenizer.pad([enc], clf.input_names)
        values = dict(zip(names, sess.run(None, feed), strict=True))
        for w, node in gemms.items():
            a = values[node.input[0]]
            rows[w].append(a.reshape(-1, a.shape[-1]))
    out = {}
    for w, node in gemms.items():
        seen = np.concatenate(rows[w])
        zp = int(inits[node.input[4]])
        bound = max(int(seen.max()), 2 * zp - 1)  # symmetric recipes: zp +- (zp - 1)
        out[w] = np.concatenate([seen, np.full((1, seen.shape[1]), bound, dtype=np.uint8)])
    return out


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (Debian: qemu-user)")
def test_default_artifact_never_saturates_without_vnni(standin_built: Path, tmp_path: Path) -> None:
    """Under an emulated Haswell (AVX2, no VNNI: VPMADDUBSW's saturating int16 pair sums).

    Pins, independently of this host's float kernels: (1) every integer GEMM of the default
    artifact, fed the uint8 activations it really receives plus a worst-case row, gives the exact
    integer product there; (2) on that CPU a text's logits alone and in a padded batch are equal
    to the bit; (3) its answers match this host's: same labels, scores within a measured
    cross-ISA tolerance (float kernels differ by ISA, so never to the bit across hosts).
    """
    activations = _gemm_activations(standin_built, HELD_OUT)
    arrays: dict[str, Any] = activations  # savez's keyword types clash with **arrays
    np.savez(tmp_path / "a.npz", **arrays)
    proc = subprocess.run(
        [
            *(QEMU or "", "-cpu", "Haswell", sys.executable, "-m", "tests.compiler.no_vnni_probe"),
            *(str(standin_built), json.dumps(HELD_OUT), str(tmp_path / "a.npz")),
            str(tmp_path / "y.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    emulated = json.loads(proc.stdout)
    assert emulated["saturates"] is True  # the emulated CPU really has the saturating kernel

    model = onnx.load(str(standin_built / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = {
        n.input[1]: int(inits[n.input[4]])
        for n in model.graph.node
        if n.op_type == "MatMulIntegerToFloat"
    }
    with np.load(tmp_path / "y.npz") as data:
        got = {name: data[name] for name in data.files}
    assert set(got) == set(activations) and len(got) >= 12
    for w, a in activations.items():
        exact = (a.astype(np.int64) - zero_points[w]) @ inits[w].astype(np.int64)
        assert np.array_equal(got[w].astype(np.int64), exact), w

    alone = np.asarray(emulated["alone"], dtype=np.float32)
    assert np.array_equal(np.asarray(emulated["batched"], dtype=np.float32), alone)
    clf = Classifier.from_dir(standin_built)
    native = np.concatenate([clf.logits([e]) for e in clf.tokenizer.encode(HELD_OUT)])
    assert np.array_equal(alone.argmax(axis=1), native.argmax(axis=1))
    scores = [clf.scores_from_logits(x, None) for x in (alone, native)]
    assert float(np.abs(scores[0] - scores[1]).max()) <= CROSS_ISA_SCORE_TOLERANCE


def test_linears_on_one_input_merge_into_one_gemm_exactly() -> None:
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.normal(size=(K, K)).astype(np.float32), f"w{i}")
        for i in range(3)
    ]
    inits += [
        numpy_helper.from_array(rng.normal(size=K).astype(np.float32), f"b{i}") for i in range(3)
    ]
    nodes = []
    for i in range(3):
        nodes += [
            helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"], name=f"mm{i}"),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"], name=f"add{i}"),
        ]
    graph = helper.make_graph(
        nodes,
        "qkv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(3)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(2, 5, K)).astype(np.float32)
    before = _session(model).run(None, {"x": x})
    merged = onnx.ModelProto()
    merged.CopyFrom(model)
    assert passes.merge_shared_input_linears(merged) == 1
    assert [n.op_type for n in merged.graph.node] == ["MatMul", "Add", "Split"]
    after = _session(merged).run(None, {"x": x})
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Quantised: one integer GEMM and one activation quantisation for the three.
    assert per_token.rewrite(merged, targets.RECIPES["mixed"]) == 1
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in merged.graph.node) == 1

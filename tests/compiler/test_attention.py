"""The attention fusion on small generated graphs (no torch): the exporters' two forms of an
attention core become one MultiHeadAttention with the same logits, and a core that computes
something MultiHeadAttention cannot (a position term in the scores) is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from handler.compiler.attention import check_feed, fuse_attention, graph_logits

VOCAB, D, HEADS, LABELS, MAX_LEN = 50, 16, 4, 3, 16
CONFIG = {"num_attention_heads": HEADS, "hidden_size": D, "vocab_size": VOCAB}


def attention_graph(style: str) -> onnx.ModelProto:
    """Embedding -> one attention layer (Q, K, V projections with biases) -> [CLS] -> labels.

    style "sdpa": the scale split over Q and K, a -inf mask built with Where, an IsNaN guard;
    "eager": K transposed twice, the scores divided by sqrt(H), an additive -10000 mask;
    "filled": as eager, the mask applied by masked_fill (Where(pad, finfo.min, scores), as
    transformers' older DistilBERT and the hub's published ONNX exports of it do);
    "position": as eager, plus a per-key position term in the scores (not a padding mask)."""
    rng = np.random.default_rng(1)
    h = D // HEADS
    inits: dict[str, np.ndarray[Any, Any]] = {
        "emb": rng.standard_normal((VOCAB, D)).astype(np.float32),
        "cls_w": rng.standard_normal((D, LABELS)).astype(np.float32),
        "heads_shape": np.array([0, 0, HEADS, h], dtype=np.int64),
        "merge_shape": np.array([0, 0, D], dtype=np.int64),
        "zero": np.array(0, dtype=np.int64),
        "axes12": np.array([1, 2], dtype=np.int64),
    }
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"])]
    for p in "qkv":
        inits[f"w{p}"] = rng.standard_normal((D, D)).astype(np.float32) * 0.5
        inits[f"b{p}"] = rng.standard_normal(D).astype(np.float32)
        nodes += [
            helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}_mm"]),
            helper.make_node("Add", [f"b{p}", f"{p}_mm"], [p]),
            helper.make_node("Reshape", [p, "heads_shape"], [f"{p}_4d"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["q_4d"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["v_4d"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axes12"], ["mask_4d"]),
    ]
    if style == "sdpa":
        inits["root_scale"] = np.array((1.0 / np.sqrt(h)) ** 0.5, dtype=np.float32)
        inits["nothing"] = np.array(0.0, dtype=np.float32)
        inits["minus_inf"] = np.array(-np.inf, dtype=np.float32)
        nodes += [
            helper.make_node("Transpose", ["k_4d"], ["kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Mul", ["qh", "root_scale"], ["qs"]),
            helper.make_node("Mul", ["kt", "root_scale"], ["ks"]),
            helper.make_node("MatMul", ["qs", "ks"], ["scores"]),
            helper.make_node("Cast", ["mask_4d"], ["keep"], to=TensorProto.BOOL),
            helper.make_node("Where", ["keep", "nothing", "minus_inf"], ["mask_term"]),
            helper.make_node("Add", ["scores", "mask_term"], ["masked"]),
            helper.make_node("Softmax", ["masked"], ["probs_raw"], axis=-1),
            helper.make_node("IsNaN", ["probs_raw"], ["nan"]),
            helper.make_node("Where", ["nan", "nothing", "probs_raw"], ["probs"]),
        ]
    else:
        inits["sqrt_h"] = np.array(np.sqrt(h), dtype=np.float32)
        inits["one"] = np.array(1.0, dtype=np.float32)
        inits["big"] = np.array(-10000.0, dtype=np.float32)
        nodes += [
            helper.make_node("Transpose", ["k_4d"], ["kh"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["qh", "kt"], ["raw_scores"]),
            helper.make_node("Div", ["raw_scores", "sqrt_h"], ["scores"]),
            helper.make_node("Sub", ["one", "mask_4d"], ["inverted"]),
            helper.make_node("Mul", ["inverted", "big"], ["mask_term"]),
        ]
        if style == "filled":
            inits["lowest"] = np.array(np.finfo(np.float32).min, dtype=np.float32)
            inits["zero_f"] = np.array(0.0, dtype=np.float32)
            nodes += [
                helper.make_node("Equal", ["mask_4d", "zero_f"], ["pad"]),
                helper.make_node("Where", ["pad", "lowest", "scores"], ["masked"]),
            ]
        elif style == "position":
            inits["pos_bias"] = rng.standard_normal(MAX_LEN).astype(np.float32)
            nodes += [
                helper.make_node("Shape", ["input_ids"], ["ids_shape"], start=1, end=2),
                helper.make_node("Squeeze", ["ids_shape"], ["length"]),
                helper.make_node("Range", ["zero", "length", "one_i"], ["positions"]),
                helper.make_node("Gather", ["pos_bias", "positions"], ["pos_term"]),
                helper.make_node("Add", ["mask_term", "pos_term"], ["all_terms"]),
                helper.make_node("Add", ["scores", "all_terms"], ["masked"]),
            ]
            inits["one_i"] = np.array(1, dtype=np.int64)
        else:
            nodes.append(helper.make_node("Add", ["scores", "mask_term"], ["masked"]))
        if style == "filled":
            nodes = [n for n in nodes if n.output[0] not in ("inverted", "mask_term")]
        nodes.append(helper.make_node("Softmax", ["masked"], ["probs"], axis=-1))
    nodes += [
        helper.make_node("MatMul", ["probs", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["attended"]),
        helper.make_node("Gather", ["attended", "zero"], ["first"], axis=1),
        helper.make_node("MatMul", ["first", "cls_w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"attention-{style}",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
            for name in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LABELS])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fused(tmp_path: Path, style: str, config: dict[str, Any] = CONFIG) -> tuple[Path, Path, int]:
    src, dst = tmp_path / f"{style}.onnx", tmp_path / f"{style}-fused.onnx"
    onnx.save(attention_graph(style), str(src))
    return src, dst, fuse_attention(src, dst, config)


@pytest.mark.parametrize("style", ["sdpa", "eager", "filled"])
def test_an_attention_core_becomes_one_multihead_attention_with_the_samegraph_logits(
    tmp_path: Path, style: str
) -> None:
    src, dst, count = fused(tmp_path, style)
    assert count == 1
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert ops.count("MultiHeadAttention") == 1
    assert "Softmax" not in ops and "Transpose" not in ops
    for seed in range(3):  # other batches than the build's own check
        feed = check_feed(VOCAB, seed=seed + 10)
        before, after = graph_logits(src, feed), graph_logits(dst, feed)
        np.testing.assert_allclose(after, before, atol=1e-5)
        for row in range(len(feed["input_ids"])):  # a text alone answers as in the batch
            n = int(feed["attention_mask"][row].sum())
            alone = {k: v[row : row + 1, :n] for k, v in feed.items()}
            np.testing.assert_allclose(graph_logits(dst, alone)[0], after[row], atol=1e-5)


def test_a_core_with_a_position_term_is_left_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The matcher takes the position term for a mask; the logits check refuses the result."""
    with caplog.at_level("WARNING", logger="handler.compiler.attention"):
        src, dst, count = fused(tmp_path, "position")
    assert count == 0
    assert dst.read_bytes() == src.read_bytes()
    assert "attention fusion dropped: logits differ" in caplog.text


def test_a_config_with_other_heads_fuses_nothing(tmp_path: Path) -> None:
    src, dst, count = fused(tmp_path, "eager", {**CONFIG, "num_attention_heads": 2})
    assert count == 0
    assert dst.read_bytes() == src.read_bytes()

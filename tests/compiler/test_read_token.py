"""The last layer cut to the token the head reads (handler/compiler/read_token.py), on small
generated graphs (no torch): the same logits on padded batches, the feed-forward block on one
row per text, and the graph left alone where the selection or a node would not allow it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from handler.compiler import read_token
from handler.compiler.attention import check_feed, graph_logits
from handler.compiler.per_token import rewrite
from handler.compiler.targets import RECIPES

VOCAB, D, HEADS, FF, LABELS, MAX_LEN = 50, 16, 4, 32, 3, 16
CONFIG = {"vocab_size": VOCAB}


def layer_graph(
    index: int = 0, hidden_out: bool = False, position_term: str = "", other_gather: bool = False
) -> onnx.ModelProto:
    """Embedding -> two layers (fused attention, residuals, LayerNorms, GELU feed-forward) ->
    Gather(axis=1, index) -> labels. `hidden_out`: the last hidden state is an output too;
    `position_term`: the last layer adds a position table after its attention, "computed" (the
    table sliced to the batch's length) or "constant" (a [1, S, D] initializer);
    `other_gather`: token 0 of the embeddings is also read (Gather(axis=1)), into an output."""
    rng = np.random.default_rng(3)
    inits: dict[str, np.ndarray[Any, Any]] = {
        "emb": rng.standard_normal((VOCAB, D)).astype(np.float32),
        "cls_w": rng.standard_normal((D, LABELS)).astype(np.float32),
        "cls_b": rng.standard_normal(LABELS).astype(np.float32),
        "index": np.array(index, dtype=np.int64),
        "pos": rng.standard_normal((1, MAX_LEN, D)).astype(np.float32),
        "s0": np.array([0], dtype=np.int64),
        "axis1": np.array([1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h0"]),
        helper.make_node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32),
        helper.make_node("Shape", ["input_ids"], ["len"], start=1, end=2),
    ]
    x = "h0"
    for layer in range(2):
        p = f"l{layer}"
        for name, shape in [
            ("wq", (D, D)),
            ("wk", (D, D)),
            ("wv", (D, D)),
            ("wo", (D, D)),
            ("w1", (D, FF)),
            ("w2", (FF, D)),
        ]:
            inits[f"{p}{name}"] = (rng.standard_normal(shape) * 0.4).astype(np.float32)
        for name, n in [("bq", D), ("bk", D), ("bv", D), ("bo", D), ("b1", FF), ("b2", D)]:
            inits[f"{p}{name}"] = rng.standard_normal(n).astype(np.float32) * 0.1
        for name in ("g1", "g2"):
            inits[f"{p}{name}"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        for name in ("n1", "n2"):
            inits[f"{p}{name}"] = (0.1 * rng.standard_normal(D)).astype(np.float32)
        for t in "qkv":
            nodes += [
                helper.make_node("MatMul", [x, f"{p}w{t}"], [f"{p}{t}mm"]),
                helper.make_node("Add", [f"{p}{t}mm", f"{p}b{t}"], [f"{p}{t}"]),
            ]
        attn = f"{p}attn"
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [f"{p}q", f"{p}k", f"{p}v", "", "mask32"],
                [attn],
                domain="com.microsoft",
                num_heads=HEADS,
            )
        )
        if position_term == "computed" and layer == 1:
            nodes.append(helper.make_node("Slice", ["pos", "s0", "len", "axis1"], [f"{p}pos"]))
        if position_term and layer == 1:
            table = f"{p}pos" if position_term == "computed" else "pos"
            nodes.append(helper.make_node("Add", [attn, table], [f"{p}attn_pos"]))
            attn = f"{p}attn_pos"
        nodes += [
            helper.make_node("MatMul", [attn, f"{p}wo"], [f"{p}omm"]),
            helper.make_node("Add", [f"{p}omm", f"{p}bo"], [f"{p}o"]),
            helper.make_node("Add", [f"{p}o", x], [f"{p}r1"]),
            helper.make_node(
                "LayerNormalization", [f"{p}r1", f"{p}g1", f"{p}n1"], [f"{p}ln1"], axis=-1
            ),
            helper.make_node("MatMul", [f"{p}ln1", f"{p}w1"], [f"{p}f1"]),
            helper.make_node(
                "BiasGelu", [f"{p}f1", f"{p}b1"], [f"{p}gelu"], domain="com.microsoft"
            ),
            helper.make_node("MatMul", [f"{p}gelu", f"{p}w2"], [f"{p}f2mm"]),
            helper.make_node("Add", [f"{p}f2mm", f"{p}b2"], [f"{p}f2"]),
            helper.make_node("Add", [f"{p}f2", f"{p}ln1"], [f"{p}r2"]),
            helper.make_node(
                "LayerNormalization", [f"{p}r2", f"{p}g2", f"{p}n2"], [f"{p}ln2"], axis=-1
            ),
        ]
        x = f"{p}ln2"
    nodes += [
        helper.make_node("Gather", [x, "index"], ["picked"], axis=1),
        helper.make_node("MatMul", ["picked", "cls_w"], ["cls_mm"]),
        helper.make_node("Add", ["cls_mm", "cls_b"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LABELS])]
    if other_gather:
        nodes.append(helper.make_node("Gather", ["h0", "index"], ["first_embedding"], axis=1))
        outputs.append(
            helper.make_tensor_value_info("first_embedding", TensorProto.FLOAT, ["batch", D])
        )
    if hidden_out:
        outputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", D]))
    graph = helper.make_graph(
        nodes,
        "layers",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _feeds() -> list[dict[str, np.ndarray[Any, Any]]]:
    """check_feed's padded batch, another seed, and each of its texts alone (unpadded)."""
    feeds = [check_feed(VOCAB, seed) for seed in (1, 2)]
    batch = feeds[0]
    for row in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][row].sum())
        feeds.append({k: v[row : row + 1, :n] for k, v in batch.items()})
    return feeds


def _readers_of_rows(model: onnx.ModelProto) -> list[str]:
    """The ops that read a tensor cut to the selected token."""
    return sorted(n.op_type for n in model.graph.node if any(i.endswith("/rows") for i in n.input))


@pytest.mark.parametrize("index", [0, -1])
def test_the_last_layer_runs_on_the_selected_token_with_the_same_logits(
    tmp_path: Path, index: int
) -> None:
    src = _save(layer_graph(index), tmp_path / "src.onnx")
    dst = tmp_path / "rows.onnx"
    moved = read_token.prune_rows(src, dst, CONFIG)
    # The last layer's output projection, bias, residual, LayerNorm, FFN in, GELU, FFN out,
    # bias, residual, LayerNorm.
    assert moved == 10
    pruned = onnx.load(str(dst))
    # Attention still sees every token; everything after it sees the selected one: slices of
    # the attention output and of the layer's input (for the residual).
    assert len([n for n in pruned.graph.node if n.op_type == "Slice"]) == 2
    readers = _readers_of_rows(pruned)
    assert readers.count("MatMul") == 3  # output projection, FFN in, FFN out
    assert "MultiHeadAttention" not in readers
    for feed in _feeds():
        np.testing.assert_allclose(graph_logits(dst, feed), graph_logits(src, feed), atol=1e-5)


def test_a_cut_graph_answers_each_text_alone_and_in_a_batch_to_the_bit(tmp_path: Path) -> None:
    """Per-token int8 after the cut: every text alone equals its row in the padded batch, to
    the bit (rows are computed apart; the cut adds nothing that sees the padding)."""
    src = _save(layer_graph(), tmp_path / "src.onnx")
    cut = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, cut, CONFIG)
    model = onnx.load(str(cut))
    rewrite(model, RECIPES["mixed"])
    graph = _save(model, tmp_path / "cut-int8.onnx")
    batch, *alone = [graph_logits(graph, feed) for feed in _feeds()[:1] + _feeds()[2:]]
    for row, logits in enumerate(alone):
        np.testing.assert_array_equal(logits[0], batch[row])


def test_the_per_token_graph_of_a_pruned_layer_keeps_its_answers_and_bits(tmp_path: Path) -> None:
    """The per-token rewrite after the cut: the same integer recipe as on the uncut graph
    (a slice of a LayerNorm output is quantised as one), so the same logits."""
    src = _save(layer_graph(), tmp_path / "src.onnx")
    cut = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, cut, CONFIG)
    graphs = {}
    for name, path in [("whole", src), ("cut", cut)]:
        model = onnx.load(str(path))
        rewrite(model, RECIPES["mixed"])
        graphs[name] = _save(model, tmp_path / f"{name}-int8.onnx")
    for feed in _feeds():
        np.testing.assert_allclose(
            graph_logits(graphs["cut"], feed), graph_logits(graphs["whole"], feed), atol=1e-5
        )


def test_the_head_is_told_from_another_read_of_token_zero(tmp_path: Path) -> None:
    src = _save(layer_graph(other_gather=True), tmp_path / "src.onnx")
    dst = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, dst, CONFIG) == 10
    for feed in _feeds():
        np.testing.assert_allclose(graph_logits(dst, feed), graph_logits(src, feed), atol=1e-5)


def test_a_hidden_state_read_whole_elsewhere_is_left_whole(tmp_path: Path) -> None:
    src = _save(layer_graph(hidden_out=True), tmp_path / "src.onnx")
    dst = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, dst, CONFIG) == 0
    assert dst.read_bytes() == src.read_bytes()


def test_a_selection_past_the_first_token_is_left_alone(tmp_path: Path) -> None:
    """Token 3 does not exist in a one-token text: the graph must keep failing there as it
    did, not answer from a slice that came out empty."""
    src = _save(layer_graph(index=3), tmp_path / "src.onnx")
    assert read_token.prune_rows(src, tmp_path / "rows.onnx", CONFIG) == 0


def test_a_computed_position_term_is_cut_to_the_token_too(tmp_path: Path) -> None:
    src = _save(layer_graph(position_term="computed"), tmp_path / "src.onnx")
    dst = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, dst, CONFIG) == 11  # the 10, and the position Add
    for feed in _feeds():
        np.testing.assert_allclose(graph_logits(dst, feed), graph_logits(src, feed), atol=1e-5)


def test_a_constant_with_a_sequence_axis_stops_the_cut_after_it(tmp_path: Path) -> None:
    """A [1, S, D] constant after attention is not per row: the Slice goes after its Add."""
    src = _save(layer_graph(position_term="constant"), tmp_path / "src.onnx")
    dst = tmp_path / "rows.onnx"
    moved = read_token.prune_rows(src, dst, CONFIG)
    assert moved == 10  # from the output projection on
    slices = [n.input[0] for n in onnx.load(str(dst)).graph.node if n.op_type == "Slice"]
    assert "l1attn_pos" in slices  # the Slice comes after the table's Add
    feed = check_feed(VOCAB)  # the table's length: the only length this graph takes
    np.testing.assert_allclose(graph_logits(dst, feed), graph_logits(src, feed), atol=1e-5)


def test_a_cut_that_computes_otherwise_is_refused_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A LayerNorm over the sequence axis is not per row: the cut stops after it. And the
    logits check is the last word: claim it is per row, and the result is dropped, the graph
    copied unchanged and the build told why."""
    model = layer_graph()
    # The last LayerNorm normalises over the sequence axis instead: not per row.
    last_norm = [n for n in model.graph.node if n.op_type == "LayerNormalization"][-1]
    for a in last_norm.attribute:
        if a.name == "axis":
            a.i = 1
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ones((MAX_LEN, D), dtype=np.float32), "g_seq"),
            numpy_helper.from_array(np.zeros((MAX_LEN, D), dtype=np.float32), "n_seq"),
        ]
    )
    last_norm.input[1], last_norm.input[2] = "g_seq", "n_seq"
    src = _save(model, tmp_path / "src.onnx")
    feed = check_feed(VOCAB)
    assert feed["input_ids"].shape[1] == MAX_LEN  # the [S, D] scale needs the full length
    dst = tmp_path / "rows.onnx"
    assert read_token.prune_rows(src, dst, CONFIG) == 0  # the selection reads that norm's output
    monkeypatch.setattr(read_token, "per_row_norm", lambda g, node: True)
    with caplog.at_level(logging.WARNING):
        assert read_token.prune_rows(src, dst, CONFIG) == 0
    assert dst.read_bytes() == src.read_bytes()
    assert "last-layer row pruning dropped" in caplog.text

"""Attention cores -> onnxruntime's MultiHeadAttention, projections left as MatMuls.

onnxruntime's own attention fusion does not recognise the graphs today's exporters write (the
SDPA form: the scale split over Q and K, a Where-built -inf mask, an IsNaN guard after Softmax),
and its `Attention` op would swallow the Q/K/V MatMuls that the per-token rewrite quantises. This
pass matches the core by what it computes, from each Softmax outwards:

    q, k, v [B, S, D] --Reshape [B, S, N, H]--Transpose--> heads
    P   = Softmax(scale_q * Qh @ scale_k * Kh^T * scale_s  (+ or filled by a padding mask))
                                                                            [IsNaN guard]
    out = Reshape(Transpose(P @ Vh)) [B, S, D]

and replaces it with one `MultiHeadAttention(q, k, v, key_padding_mask)` node (a contrib op with
a kernel on every CPU). The mask is rebuilt from the graph's `attention_mask` input, so the
export's own mask subgraph (some 30 shape nodes) goes too. About 20 nodes per layer become one;
for one short text, where onnxruntime's per-node cost rivals the arithmetic, that is most of the
gain. Whatever the matcher concludes, the result is accepted only if it computes the same logits
as the graph it came from on padded batches; otherwise the graph is kept as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.compiler.graph import GraphIndex, drop_unused_initializers, live

log = logging.getLogger(__name__)

MASK_INPUT = "attention_mask"
MASK_I32 = "mha/key_padding_mask"
FUSION_TOLERANCE = 1e-3  # fp32 logits; only the order of the attention arithmetic changes


@dataclass
class _Core:
    q: str
    k: str
    v: str
    out: str
    scale: float
    end: Any  # the Reshape that merges the heads: the MultiHeadAttention takes its place


class _Cores(GraphIndex):
    """The graph index with the attention core's matchers."""

    def strip_scale(self, name: str) -> tuple[str, float]:
        """Follow Mul/Div by scalar constants back; returns (tensor before them, their product)."""
        scale = 1.0
        while (node := self.op(name, "Mul", "Div")) is not None:
            a, b = node.input
            if node.op_type == "Mul" and self.scalar(a) is not None:
                a, b = b, a
            s = self.scalar(b)
            if s is None or s == 0.0:
                break
            scale *= s if node.op_type == "Mul" else 1.0 / s
            name = a
        return name, scale

    def split_heads(self, name: str, perm: list[int], heads: int, head_size: int) -> str | None:
        """The [B, S, D] tensor that Reshape [.., .., N, H] + Transpose(perm) turned into `name`."""
        t = self.op(name, "Transpose")
        if t is None:
            return None
        if list(self.attr(t, "perm", [])) != perm:
            # K may come as Transpose(0,1,3,2) of Transpose(0,2,1,3) (BERT's eager export).
            inner = self.op(t.input[0], "Transpose")
            if perm != [0, 2, 3, 1] or inner is None:
                return None
            if list(self.attr(t, "perm", [])) != [0, 1, 3, 2]:
                return None
            if list(self.attr(inner, "perm", [])) != [0, 2, 1, 3]:
                return None
            t = inner
        r = self.op(t.input[0], "Reshape")
        if r is None or not self.reshape_tail_is(r.input[1], [heads, head_size]):
            return None
        return str(r.input[0])

    def reshape_tail_is(self, shape: str, tail: list[int]) -> bool:
        """Whether a Reshape's target shape ends in `tail` (an entry may be -1)."""
        dims: list[int | None] = []
        if shape in self.consts:
            dims = [int(d) for d in self.consts[shape].reshape(-1)]
        elif (c := self.op(shape, "Concat")) is not None:
            for part in c.input:
                value = self.consts.get(part)
                dims += [None] if value is None else [int(d) for d in value.reshape(-1)]
        else:
            return False
        if len(dims) != 2 + len(tail):
            return False
        ends = dims[-len(tail) :]
        return all(d == want or d == -1 for d, want in zip(ends, tail, strict=True)) and (
            ends.count(-1) <= 1
        )

    def unmasked(self, name: str) -> str:
        """The scores under a padding mask, whichever way the export applied it: added (scores +
        mask, either order) or filled (masked_fill: Where(cond, fill, scores) or Where(cond,
        scores, fill) with a large negative fill). The mask is rebuilt, then checked."""
        add = self.op(name, "Add")
        if add is not None:
            a, b = add.input
            return str(a if self.op(a, "MatMul", "Mul", "Div") is not None else b)
        where = self.op(name, "Where")
        if where is not None:
            _, x, y = where.input
            for fill, kept in ((x, y), (y, x)):
                value = self.scalar(fill)
                if value is not None and value <= -1e4:
                    return str(kept)
        return name

    def match(self, softmax: Any, heads: int, head_size: int) -> _Core | None:
        if self.attr(softmax, "axis", -1) not in (-1, 3):
            return None
        scores = self.unmasked(softmax.input[0])
        scores, s_scale = self.strip_scale(scores)
        qk = self.op(scores, "MatMul")
        if qk is None:
            return None
        qh, q_scale = self.strip_scale(qk.input[0])
        kh, k_scale = self.strip_scale(qk.input[1])
        q = self.split_heads(qh, [0, 2, 1, 3], heads, head_size)
        k = self.split_heads(kh, [0, 2, 3, 1], heads, head_size)
        probs = softmax.output[0]
        isnan = next((n for n in self.readers.get(probs, []) if n.op_type == "IsNaN"), None)
        if isnan is not None:  # Where(IsNaN(P), 0, P): rows with every key masked
            guard = self.only_reader(isnan.output[0], "Where")
            if guard is None or guard.input[2] != probs:
                return None
            probs = guard.output[0]
        pv = self.only_reader(probs, "MatMul")
        if q is None or k is None or pv is None or pv.input[0] != probs:
            return None
        v = self.split_heads(pv.input[1], [0, 2, 1, 3], heads, head_size)
        back = self.only_reader(pv.output[0], "Transpose")
        if v is None or back is None or list(self.attr(back, "perm", [])) != [0, 2, 1, 3]:
            return None
        merge = self.only_reader(back.output[0], "Reshape")
        if merge is None or not self.reshape_tail_is(merge.input[1], [heads * head_size]):
            return None
        scale = q_scale * k_scale * s_scale
        return _Core(q, k, v, merge.output[0], scale, merge)


def fuse_model(model: Any, heads: int, hidden: int) -> int:
    """Rewrite `model` in place; returns how many attention cores became MultiHeadAttention."""
    from onnx import TensorProto, helper

    if heads <= 0 or hidden <= 0 or hidden % heads:
        return 0
    graph = model.graph
    if not any(i.name == MASK_INPUT for i in graph.input):
        return 0  # no padding mask to rebuild: the export's own mask stays
    g = _Cores.of(model)
    cores = []
    for node in graph.node:
        if node.op_type == "Softmax":
            found = g.match(node, heads, hidden // heads)
            if found is not None:
                cores.append(found)
    if not cores:
        return 0
    new_nodes = [
        helper.make_node("Cast", [MASK_INPUT], [MASK_I32], name=MASK_I32, to=TensorProto.INT32)
    ]
    by_end = {id(core.end): core for core in cores}
    for node in graph.node:  # the rest of each core is left unused, and dropped by live
        if id(node) in by_end:
            core = by_end[id(node)]
            new_nodes.append(
                helper.make_node(
                    "MultiHeadAttention",
                    [core.q, core.k, core.v, "", MASK_I32],
                    [core.out],
                    name=f"mha/{len(new_nodes)}",
                    domain="com.microsoft",
                    num_heads=heads,
                    scale=core.scale,
                )
            )
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(live(new_nodes, {o.name for o in graph.output}))
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    drop_unused_initializers(graph)
    return len(cores)


def graph_logits(path: Path, feed: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The first output of graph `path` on `feed` (the inputs it declares), one thread."""
    from handler.inference.session import create_session

    session = create_session(path, 1, pre_optimized=False)
    names = {i.name for i in session.get_inputs()}
    out: np.ndarray[Any, Any] = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
    return out


def check_feed(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """A padded batch: lengths 16, 13, 1 and 8 (one text alone in its row, the rest padding)."""
    rng = np.random.default_rng(seed)
    lengths = [16, 13, 1, 8]
    ids = rng.integers(1, max(2, vocab_size), size=(len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = ids * mask
    return {"input_ids": ids, MASK_INPUT: mask, "token_type_ids": np.zeros_like(ids)}


def rewrite_checked(
    src: Path,
    dst: Path,
    model_config: dict[str, Any],
    rewrite: Callable[[Any], int],
    tolerance: float,
    what: str,
) -> int:
    """Load `src`, apply `rewrite` (in place; returns how many places it changed) and write the
    result to `dst` if it computes the logits of `src` (within `tolerance`) on the padded check
    batch. Otherwise (nothing changed, other logits, or a graph onnxruntime refuses) `dst` is
    a copy of `src`, a warning names `what`, and the result is 0."""
    import onnx

    model = onnx.load(str(src))
    changed = rewrite(model)
    if changed:
        onnx.save(model, str(dst))
        feed = check_feed(int(model_config.get("vocab_size") or 2))
        try:
            diff = float(np.max(np.abs(graph_logits(src, feed) - graph_logits(dst, feed))))
        except Exception as exc:  # onnxruntime refused the rewritten graph
            log.warning("%s dropped: the rewritten graph failed: %s", what, exc)
        else:
            if diff <= tolerance:
                return changed
            log.warning("%s dropped: logits differ by %.3g from the graph it came from", what, diff)
    dst.write_bytes(src.read_bytes())
    return 0


def fuse_attention(src: Path, dst: Path, model_config: dict[str, Any]) -> int:
    """Write `src` with its attention cores fused to `dst`; returns how many were fused (0: the
    graph is copied unchanged, when nothing matched or the fused graph computed otherwise)."""
    heads = int(model_config.get("n_heads") or model_config.get("num_attention_heads") or 0)
    hidden = int(model_config.get("dim") or model_config.get("hidden_size") or 0)
    return rewrite_checked(
        src,
        dst,
        model_config,
        lambda model: fuse_model(model, heads, hidden),
        FUSION_TOLERANCE,
        "attention fusion",
    )

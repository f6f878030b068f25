"""The last layer computed only for the token the head reads.

A sequence classifier's head reads one token of the last hidden state: DistilBERT, BERT's pooler,
RoBERTa's and DeBERTa's heads all take `hidden[:, 0]`, a `Gather(axis=1, index 0)` in the graph.
Everything after the last attention works on each token row alone (the output projection,
residual Adds, LayerNorms, the feed-forward GEMMs, and after the per-token rewrite the per-row
quantisation too). So the last layer's attention output projection and whole feed-forward block
are needed for the selected token only: in a 6-layer model about an eighth of the GEMM work, in
padded batches and for one text alike.

The cut stops at the attention's output. Attention's row r depends on query row r alone, so the
query projection could be cut too (2% more on the stand-in), but onnxruntime's
MultiHeadAttention takes another path for a one-row query whose rounding depends on the padded
key length: scores came out 6e-8 apart alone and in a batch. Cut after it, every score stays
bit-identical alone and in any batch.

The pass moves the selection up the graph: each row-wise node whose every result feeds only the
selection is recomputed on `x[:, i:i+1]` of its row inputs, and a `Slice` is placed where a
tensor is still needed whole (the attention's output, and the last layer's input, which the
residual reads and the queries, keys and values too).
Nodes left without a reader are dropped. Which inputs carry rows is decided by op type (never by
the model's vocabulary or labels), and the result is accepted only if it computes the same logits
as the graph it came from on a padded batch; otherwise the graph is kept as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from handler.compiler.attention import rewrite_checked
from handler.compiler.graph import NORM_OPS, ROW_WISE, GraphIndex, drop_unused_initializers, live

ROW_CUT_TOLERANCE = 1e-4  # fp32 logits: the same arithmetic on fewer rows
ROW_AXIS = 1  # [batch, sequence, hidden]


class _Rows:
    def __init__(self, model: Any, g: GraphIndex) -> None:
        self.model, self.g = model, g
        self.outputs = {o.name for o in model.graph.output}

    def constant(self, name: str) -> bool:
        return name in self.g.consts

    def row_inputs(self, node: Any) -> list[int] | None:
        """Indices of `node`'s inputs that carry the sequence axis, or None when the node is not
        row-wise (or takes a constant that has a sequence axis of its own)."""
        op = node.op_type
        if sum(1 for o in node.output if o) != 1:
            return None  # a clone computes one result (SkipLayerNorm may also expose its sum)
        if op in NORM_OPS and not per_row_norm(self.g, node):
            return None
        if op in ROW_WISE:
            rows = []
            for i, name in enumerate(node.input):
                if not name:
                    continue
                if self.constant(name):
                    shape = self.g.consts[name].shape
                    if len(shape) > 2 and shape[-2] != 1:
                        return None  # e.g. a [1, S, D] table: not a per-row constant
                else:
                    rows.append(i)
            return rows or None
        if op in ("MatMul", "MatMulIntegerToFloat"):
            weight = node.input[1] if len(node.input) > 1 else ""
            if not self.constant(weight) or self.g.consts[weight].ndim != 2:
                return None
            return [0]
        return None

    def pushable(self, select: Any) -> set[int]:
        """Row-wise nodes whose every result is read only as a row input of another such node
        or by the selection itself (the largest such set)."""
        candidates = {id(n): n for n in self.model.graph.node if self.row_inputs(n) is not None}
        changed = True
        while changed:
            changed = False
            for key, node in list(candidates.items()):
                if not all(self._read_only_by(out, candidates, select) for out in node.output):
                    del candidates[key]
                    changed = True
        return set(candidates)

    def _read_only_by(self, name: str, nodes: dict[int, Any], select: Any) -> bool:
        if name in self.outputs:
            return False
        for user in self.g.readers.get(name, []):
            if user is select:
                if list(user.input).index(name) != 0:
                    return False
                continue
            if id(user) not in nodes:
                return False
            rows = self.row_inputs(user) or []
            if any(user.input[i] == name for i in range(len(user.input)) if i not in rows):
                return False
        return True


def per_row_norm(g: GraphIndex, node: Any) -> bool:
    """A LayerNorm over the last axis alone normalises each row by itself."""
    return bool(g.attr(node, "axis", -1) == -1)


def _selections(model: Any, g: GraphIndex) -> list[tuple[Any, int]]:
    """Nodes that read one token (index 0 or -1) of a computed [batch, sequence, ..] tensor.
    Any other index may not exist in a short text, and the graph must keep failing there as
    it did, not answer from a slice that came out empty."""
    found = []
    for node in model.graph.node:
        if node.op_type != "Gather" or g.attr(node, "axis", 0) != ROW_AXIS:
            continue
        index = g.consts.get(node.input[1])
        if index is None or index.size != 1 or index.dtype.kind not in "iu":
            continue
        if node.input[0] not in g.consts and int(index.reshape(-1)[0]) in (0, -1):
            found.append((node, int(index.reshape(-1)[0])))
    return found


def prune_model(model: Any) -> int:
    """Rewrite `model` in place; returns how many nodes now run on the selected token only."""
    from onnx import helper, numpy_helper

    g = GraphIndex.of(model)
    rows = _Rows(model, g)
    # The head's selection: the one whose tensor comes from row-wise work it alone reads.
    heads = []
    for select, index in _selections(model, g):
        pushable = rows.pushable(select)
        if id(g.producer.get(select.input[0])) in pushable:
            heads.append((select, index, pushable))
    if len(heads) != 1:
        return 0
    select, index, pushable = heads[0]
    starts = numpy_helper.from_array(np.array([index], dtype=np.int64), "rows/starts")
    ends = numpy_helper.from_array(
        np.array([index + 1 if index != -1 else np.iinfo(np.int64).max], dtype=np.int64),
        "rows/ends",
    )
    axes = numpy_helper.from_array(np.array([ROW_AXIS], dtype=np.int64), "rows/axes")
    zero = numpy_helper.from_array(
        np.zeros(g.consts[select.input[1]].shape, dtype=g.consts[select.input[1]].dtype),
        "rows/index",
    )
    inserted: list[Any] = []  # before the selection, in the order they are made
    memo: dict[str, str] = {}
    moved = 0

    def sliced(name: str) -> str:
        nonlocal moved
        if name in memo:
            return memo[name]
        producer = g.producer.get(name)
        out = f"{name}/rows"
        if producer is not None and id(producer) in pushable:
            row_ins = rows.row_inputs(producer) or []
            inputs = [sliced(x) if i in row_ins else x for i, x in enumerate(producer.input)]
            clone = helper.make_node(
                producer.op_type,
                inputs,
                [out],
                name=out,
                domain=producer.domain,
            )
            clone.attribute.extend(producer.attribute)
            inserted.append(clone)
            moved += 1
        else:
            inserted.append(
                helper.make_node(
                    "Slice",
                    [name, "rows/starts", "rows/ends", "rows/axes"],
                    [out],
                    name=f"{name}/slice",
                )
            )
        memo[name] = out
        return out

    picked = sliced(select.input[0])
    nodes: list[Any] = []
    for node in model.graph.node:
        if node is select:
            nodes.extend(inserted)
            node.input[0] = picked
            node.input[1] = "rows/index"
        nodes.append(node)
    graph = model.graph
    del graph.node[:]
    graph.node.extend(live(nodes, {o.name for o in graph.output}))
    graph.initializer.extend([starts, ends, axes, zero])
    drop_unused_initializers(graph)
    return moved


def prune_rows(src: Path, dst: Path, model_config: dict[str, Any]) -> int:
    """Write `src` with its last layer cut to the selected token to `dst`; returns how many
    nodes were moved (0: the graph is copied unchanged, when no selection was found or the
    result computed otherwise)."""
    return rewrite_checked(
        src, dst, model_config, prune_model, ROW_CUT_TOLERANCE, "last-layer row pruning"
    )

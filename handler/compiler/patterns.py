"""Graph patterns the per-token rewrite looks for: what computed a GEMM input (its kind), which
tensors share rows, and the places where a constant offset can be moved for free (a LayerNorm's
beta and the residual's bias, an attention's value projection, the consumers' biases)."""

from __future__ import annotations

from typing import Any

import numpy as np

from handler.compiler.graph import GELU_OPS, NORM_OPS, ROW_WISE, GraphIndex, attr


def input_kind(producer_op: str) -> str:
    """gelu (shifted, unsigned), norm (a LayerNorm output) or other."""
    if producer_op in GELU_OPS:
        return "gelu"
    return "norm" if producer_op in NORM_OPS else "other"


def source_op(producer: dict[str, Any], name: str) -> str:
    """The op that computed `name`, looking through Slices (a row of a LayerNorm output is still
    a LayerNorm output: see handler/compiler/read_token.py)."""
    node = producer.get(name)
    while node is not None and node.op_type == "Slice":
        node = producer.get(node.input[0])
    return str(getattr(node, "op_type", ""))


def row_sources(graph: Any) -> dict[str, str]:
    """For each tensor, the tensor whose rows (every axis but the last) it has for certain:
    through element-wise ops whose every non-constant input has the same rows (constants of
    rank <= 1), MatMuls by a constant, Splits and Concats on the last axis, and attention
    (its query's rows); anything else (a Slice of rows, a Reshape, a graph input) starts rows
    of its own. Inputs with the same rows can share one zero-point tensor."""
    consts = {i.name: len(i.dims) for i in graph.initializer}
    rows: dict[str, str] = {}

    def of(name: str) -> str:
        return rows.get(name, name)

    for node in graph.node:
        dynamic = [i for i in node.input if i and i not in consts]
        axis = attr(node, "axis", 0)
        source: str | None = None
        if node.op_type in ("MatMul", "MultiHeadAttention") and node.input:
            if node.op_type == "MultiHeadAttention" or node.input[1] in consts:
                source = of(node.input[0])
        elif node.op_type in ROW_WISE or (node.op_type in ("Split", "Concat") and axis == -1):
            wide = any(consts[i] > 1 for i in node.input if i in consts)
            sources = {of(i) for i in dynamic}
            if not wide and len(sources) == 1:
                source = sources.pop()
        if node.op_type == "Split" and len(dynamic) > 1:
            source = None
        for out in node.output:
            rows[out] = source if source is not None else out
    return rows


def row_slice(node: Any, inits: dict[str, Any]) -> bool:
    """A Slice with constant axes, none of them the last (channel) axis, and unit steps: it
    keeps whole rows, so a per-channel offset passes through it unchanged."""
    from onnx import numpy_helper

    axes = inits.get(node.input[3]) if len(node.input) > 3 else None
    steps = inits.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if axes is None or -1 in numpy_helper.to_array(axes).tolist():
        return False
    return steps is None or bool(np.all(numpy_helper.to_array(steps) == 1))


def layernorm_shift(
    g: GraphIndex, name: str, members: list[Any], outputs: set[str]
) -> tuple[Any, list[tuple[Any, str]]] | None:
    """(the LayerNormalization, the residual Adds' bias Adds) when `name` is the output of a
    LayerNormalization over the last axis with a constant beta, and its every other reader
    (through Slices on other axes) is a residual Add whose other operand is `X + bias` read by
    nothing else: then y - c can be written by the LayerNorm itself (beta - c) and c added back
    to `bias`, so that every residual sum stays as it was. Else None."""
    producer, inits, readers = g.producer, g.inits, g.readers
    from onnx import TensorProto

    ln = producer.get(name)
    if ln is None or ln.op_type != "LayerNormalization" or ln.domain not in ("", "ai.onnx"):
        return None
    if ln.output[0] != name or any(a.name == "axis" and a.i != -1 for a in ln.attribute):
        return None
    k = inits[members[0].input[1]].dims[0]
    if len(ln.input) < 3 or ln.input[2] not in inits or list(inits[ln.input[2]].dims) != [k]:
        return None
    if name in outputs:
        return None
    ours = {id(m) for m in members}
    partners = []
    for reader in readers[name]:
        if id(reader) in ours:
            continue
        through, node = name, reader
        while node.op_type == "Slice" and node.input[0] == through:
            if not row_slice(node, inits):
                return None
            through = node.output[0]
            if through in outputs or len(readers[through]) != 1:
                return None
            node = readers[through][0]
        if node.op_type != "Add" or list(node.input).count(through) != 1:
            return None
        other = next(i for i in node.input if i != through)
        biased = producer.get(other)
        if biased is None or biased.op_type != "Add" or other in outputs:
            return None
        if len(readers[other]) != 1:
            return None
        bias_name = next((i for i in biased.input if i in inits), "")
        bias = inits.get(bias_name)
        if bias is None or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [k]:
            return None
        partners.append((biased, bias_name))
    return ln, partners


def value_projection(g: GraphIndex, name: str, members: list[Any]) -> tuple[str, str, slice] | None:
    """(weight, bias, columns) of the value projection of the MultiHeadAttention whose output
    is `name`, when changing them changes nothing else: V read by that attention alone, a
    MatMul + bias Add (or the merged Q/K/V one and a Split) read by nothing else, and the
    output read only by `members`. Else None."""
    producer, inits, readers = g.producer, g.inits, g.readers
    from onnx import numpy_helper

    if {id(n) for n in readers[name]} != {id(m) for m in members}:
        return None
    mha = producer.get(name)
    while mha is not None and mha.op_type == "Slice":  # read_token.py's cut: rows of the same
        if not row_slice(mha, inits) or len(readers[mha.input[0]]) != 1:
            return None
        mha = producer.get(mha.input[0])
    if mha is None or mha.op_type != "MultiHeadAttention" or mha.domain != "com.microsoft":
        return None
    if len(mha.input) < 3 or not mha.input[1] or not mha.input[2]:
        return None
    if len(mha.input) > 3 and mha.input[3]:  # a bias input of its own: not handled
        return None
    if any(mha.input[6:]):  # past keys and values (a decoder's cache) are not shifted
        return None
    v = mha.input[2]
    if len(readers[v]) != 1:
        return None
    node = producer.get(v)
    cols: slice | None = None
    if node is not None and node.op_type == "Split":
        sizes = inits.get(node.input[1]) if len(node.input) > 1 else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if sizes is None or axis != -1:
            return None
        widths = numpy_helper.to_array(sizes).tolist()
        j = list(node.output).index(v)
        cols = slice(int(sum(widths[:j])), int(sum(widths[: j + 1])))
        if len(readers[node.input[0]]) != 1:
            return None
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Add":
        return None
    bias_name = next((i for i in node.input if i in inits), "")
    other = next((i for i in node.input if i != bias_name), "")
    matmul = producer.get(other)
    if not bias_name or matmul is None or matmul.op_type != "MatMul":
        return None
    w_name = matmul.input[1]
    if w_name not in inits or len(readers[w_name]) != 1 or len(readers[bias_name]) != 1:
        return None
    if len(readers[other]) != 1:
        return None
    n = inits[w_name].dims[1]
    if list(inits[bias_name].dims) != [n]:
        return None
    return w_name, bias_name, cols if cols is not None else slice(0, n)


def own_biases(members: list[Any], g: GraphIndex) -> Any:
    """Each GEMM's constant bias ([N]) as (the node that adds it, its name): the Add or
    BiasGelu that is its output's only reader. None unless every GEMM in `members` has one."""
    readers, inits = g.readers, g.inits
    from onnx import TensorProto

    names = []
    for m in members:
        users = readers[m.output[0]]
        if len(users) != 1 or users[0].op_type not in ("Add", "BiasGelu"):
            return None
        user = users[0]
        if user.op_type == "BiasGelu" and user.input[0] != m.output[0]:
            return None
        bias_name = next((i for i in user.input if i != m.output[0]), "")
        bias = inits.get(bias_name)
        n = inits[m.input[1]].dims[1]
        if bias is None or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [n]:
            return None
        names.append((user, bias_name))
    return names


def feeds_gelu(members: list[Any], g: GraphIndex) -> bool:
    """Whether every GEMM in `members` goes into a GELU, directly or through the Add of a
    constant bias: the feed-forward block's first GEMM."""
    readers, inits = g.readers, g.inits

    def gelu_reads(name: str) -> bool:
        users = readers.get(name, [])
        if len(users) != 1:
            return False
        if users[0].op_type in GELU_OPS:
            return True
        if users[0].op_type == "Add" and any(i in inits for i in users[0].input):
            return gelu_reads(users[0].output[0])
        return False

    return bool(members) and all(gelu_reads(m.output[0]) for m in members)

"""Graph passes around the per-token rewrite, each exact (or, for `to_tanh_gelu`, named as not):
opset conversion, merging linear layers that share an input, folding constants into biases,
summing Add chains, smaller embedding tables, the tanh GELU, and the exact twin."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.compiler.graph import GraphIndex, opset_of
from handler.compiler.targets import EMBEDDINGS
from handler.compiler.weights import quantize_weight

if TYPE_CHECKING:
    from handler.compiler.emit import Emitter


BLOCKED_OPSET = 21  # QuantizeLinear with block_size (onnxruntime >= 1.20 on CPU)


def to_blocked_opset(model: Any) -> bool:
    """Convert `model` (in place) to the default-domain opset whose QuantizeLinear takes a
    scale per row; True when it is there. Other domains (onnxruntime's contrib ops) are left
    as they are; where onnx's converter cannot convert an op, nothing changes."""
    from onnx import version_converter

    opset = opset_of(model)
    if opset is None or opset >= BLOCKED_OPSET:
        return opset is not None
    try:
        converted = version_converter.convert_version(model, BLOCKED_OPSET)
    except Exception:  # any op the converter does not know: keep the division pass
        return False
    kept = [
        v for v in converted.graph.value_info if v.name in {w.name for w in model.graph.value_info}
    ]
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(kept)  # the converter's inferred shapes: not ours to add
    model.CopyFrom(converted)
    return True


def merge_shared_input_linears(model: Any) -> int:
    """Linear layers that read the same tensor (Q, K and V) -> one MatMul on the concatenated
    weights, one Add of the concatenated biases, and a Split into the three outputs.

    Exact in fp32 and after quantisation alike (per-column weight scales and per-row
    activation scales do not change): fewer, wider GEMMs and four nodes less per layer.
    Returns how many groups were merged.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    g = GraphIndex.of(model)
    inits, readers = g.inits, g.readers

    def linear(node: Any) -> Any:
        """The bias Add after a MatMul with a constant 2-D weight, or None."""
        if node.op_type != "MatMul" or node.input[1] not in inits:
            return None
        w = inits[node.input[1]]
        users = readers[node.output[0]]
        if len(w.dims) != 2 or w.data_type != TensorProto.FLOAT or len(users) != 1:
            return None
        add = users[0]
        bias_name = next((i for i in add.input if i != node.output[0]), "")
        bias = inits.get(bias_name)
        if add.op_type != "Add" or bias is None or list(bias.dims) != [w.dims[1]]:
            return None
        return add if len(readers[bias_name]) == 1 else None

    groups: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for node in graph.node:
        add = linear(node)
        if add is not None:
            groups[node.input[0]].append((node, add))
    merged = 0
    new_nodes: dict[int, list[Any]] = {}  # by id(): node names need not be unique, or set
    drop: set[int] = set()
    for src, members in groups.items():
        if len(members) < 2:
            continue
        tag = f"pt/merged{merged}"
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m, _ in members]
        biases = [
            numpy_helper.to_array(inits[next(i for i in a.input if i != m.output[0])])
            for m, a in members
        ]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(weights, axis=1), f"{tag}/weight"),
                numpy_helper.from_array(np.concatenate(biases), f"{tag}/bias"),
                numpy_helper.from_array(
                    np.array([w.shape[1] for w in weights], dtype=np.int64), f"{tag}/split"
                ),
            ]
        )
        new_nodes[id(members[0][0])] = [
            helper.make_node("MatMul", [src, f"{tag}/weight"], [f"{tag}/y"], name=f"{tag}/MatMul"),
            helper.make_node("Add", [f"{tag}/y", f"{tag}/bias"], [f"{tag}/yb"], name=f"{tag}/Add"),
            helper.make_node(
                "Split",
                [f"{tag}/yb", f"{tag}/split"],
                [a.output[0] for _, a in members],
                name=f"{tag}/Split",
                axis=-1,
            ),
        ]
        drop.update(id(n) for pair in members for n in pair)
        merged += 1
    if not merged:
        return 0
    nodes: list[Any] = []
    for node in graph.node:
        nodes.extend(new_nodes.get(id(node), []))
        if id(node) not in drop:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return merged


def fold_unshift(nodes: list[Any], inits: dict[str, Any], rw: Emitter) -> None:
    """Fold each GELU un-shift constant into the bias Add that follows its GEMM, where there is
    one (MatMul -> Add(bias) is how exporters write a Linear layer): one node less per layer."""
    from onnx import TensorProto

    new = {i.name: i for i in rw.new_inits}
    readers = GraphIndex(nodes).readers
    for node in list(nodes):
        if node.op_type != "Add" or not node.input[1].endswith("/unshift"):
            continue
        users = readers[node.output[0]]
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        bias_name = next((i for i in users[0].input if i != node.output[0]), "")
        bias = inits.get(bias_name)
        if (
            bias is None
            or bias.data_type != TensorProto.FLOAT
            or len(readers[bias_name]) != 1
            or list(bias.dims) != list(new[node.input[1]].dims)
        ):
            continue
        folded = rw.numpy_helper.to_array(bias) + rw.numpy_helper.to_array(new[node.input[1]])
        bias.CopyFrom(rw.numpy_helper.from_array(folded.astype(np.float32), bias_name))
        producer = next(n for n in nodes if node.input[0] in n.output)
        producer.output[0] = node.output[0]
        nodes.remove(node)
        rw.new_inits.remove(new[node.input[1]])


def sum_chains(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """Chains of Adds whose partial sums nothing else reads (a GEMM's result, its fp32
    channels' part, its bias and the residual) -> one Sum of all the terms, in the same order:
    fewer nodes, the same arithmetic."""
    g = GraphIndex(nodes)
    producer, readers = g.producer, g.readers

    def inner(name: str) -> Any:
        node = producer.get(name)
        if node is None or node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
            return None
        return node if len(readers[name]) == 1 and name not in outputs else None

    def terms_of(add: Any, absorbed: list[Any]) -> list[str]:
        """The chain's terms in order, depth first; the inner Adds into `absorbed`."""
        terms: list[str] = []
        for name in add.input:
            part = inner(name)
            if part is None:
                terms.append(name)
            else:
                absorbed.append(part)
                terms += terms_of(part, absorbed)
        return terms

    dropped: set[int] = set()
    for node in reversed(nodes):
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or id(node) in dropped:
            continue
        absorbed: list[Any] = []
        terms = terms_of(node, absorbed)
        if absorbed:
            dropped.update(id(a) for a in absorbed)
            node.op_type = "Sum"
            del node.input[:]
            node.input.extend(terms)
    return [n for n in nodes if id(n) not in dropped]


def quantise_embeddings(
    nodes: list[Any], inits: dict[str, Any], rw: Emitter, kind: str = "fp16"
) -> set[str]:
    """Gather from a float table -> Gather from a smaller copy of it, then back to float.

    "fp16" (the default): a Cast after the Gather; half the size, 11 significant bits. Chosen on
    out-of-domain selection text: int8 tables (one scale per column, a DequantizeLinear after
    the Gather; a quarter of the size) cost w7a8 52 flips of 5,500 instead of 44, and score
    differences (p99) of 0.037 instead of 0.036 (docs/decisions/2026-11-30-fidelity-refinements.md).
    Each token's row is converted on its own (batch-invariant).
    """
    from onnx import TensorProto

    if kind not in EMBEDDINGS:
        raise ValueError(f"embeddings: {kind!r} is not one of {', '.join(EMBEDDINGS)}")
    replaced: set[str] = set()
    for node in list(nodes):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        if any(other is not node and node.input[0] in other.input for other in nodes):
            continue  # the table is also read elsewhere (e.g. tied weights): leave it whole
        tag = node.output[0] + "/pt"
        values = rw.numpy_helper.to_array(table)
        if kind == "fp16":
            stored = rw.const(f"{tag}/table_fp16", values.astype(np.float16))
            back = rw.helper.make_node(
                "Cast",
                [f"{tag}/small"],
                [node.output[0]],
                name=node.output[0],
                to=TensorProto.FLOAT,
            )
        else:
            wq, ws = quantize_weight(values, 127)
            stored = rw.const(f"{tag}/table_int8", wq)
            zero = rw.const(f"{tag}/zero_point", np.zeros(wq.shape[1], dtype=np.int8))
            scale = rw.const(f"{tag}/scale", ws)
            back = rw.node(
                "DequantizeLinear", [f"{tag}/small", scale, zero], node.output[0], axis=-1
            )
        gather = rw.helper.make_node(
            "Gather", [stored, node.input[1]], [f"{tag}/small"], name=f"{tag}/Gather"
        )
        at = nodes.index(node)
        nodes[at : at + 1] = [gather, back]
        replaced.add(node.input[0])
    return replaced


def to_tanh_gelu(nodes: list[Any]) -> None:
    """Every GELU as its tanh approximation (`Refinements.tanh_gelu`), in place: onnxruntime's
    Gelu and BiasGelu become FastGelu (same inputs: x and the optional bias, which ORT's
    BiasGeluFusion also folds into a FastGelu), ONNX's Gelu gets approximate="tanh"."""
    from onnx import helper

    for node in nodes:
        if node.domain == "com.microsoft" and node.op_type in ("Gelu", "BiasGelu"):
            node.op_type = "FastGelu"
        elif node.domain in ("", "ai.onnx") and node.op_type == "Gelu":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("approximate", "tanh"))


def to_exact_twin(model: Any) -> int:
    """Store every int8 GEMM weight as uint8 around 128, in place; returns how many.

    The same integers, so the same answers as a CPU whose u8*s8 sums never saturate (VNNI,
    arm64 SDOT): u8u8 kernels widen to 16 bits on every CPU. The build evaluates a full-range
    recipe this way on a host that saturates; the shipped graph keeps its int8 weights.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMulIntegerToFloat" or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if weight.data_type != TensorProto.INT8:
            continue
        w = numpy_helper.to_array(weight)
        weight.CopyFrom(
            numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), weight.name)
        )
        zp_name = f"{node.input[1]}/twin_zero_point"
        model.graph.initializer.append(
            numpy_helper.from_array(np.full(w.shape[1], 128, dtype=np.uint8), zp_name)
        )
        while len(node.input) < 5:
            node.input.append("")
        if len(node.input) == 5:
            node.input.append(zp_name)
        else:
            node.input[5] = zp_name
        count += 1
    return count

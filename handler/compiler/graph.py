"""The one graph index every compiler pass reads, and the op families the passes reason about.

`GraphIndex` answers the questions each pass asks of an ONNX graph: which node produces a
tensor, which nodes read it, which tensors are constants (initializers, and `Constant` nodes
as values). Passes that build a new node list index that list the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Self

import numpy as np

NORM_OPS = frozenset(
    {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"}
)
GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu"})
GELU_MIN = 0.1701  # min of x * Phi(x) is -0.16997; of the tanh approximation -0.17004
# Ops that compute each row of their output (every axis but the last) from the same row of
# their inputs, given constants that carry no row axis of their own.
ELEMENTWISE = (
    frozenset(
        {
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Abs",
            "Relu",
            "Tanh",
            "Sigmoid",
            "Erf",
            "Sqrt",
            "Pow",
            "Cast",
            "Identity",
        }
    )
    | GELU_OPS
)
# LayerNorms normalise over the last axis: row-wise when that is their axis.
ROW_WISE = ELEMENTWISE | NORM_OPS


def attr(node: Any, name: str, default: Any = None) -> Any:
    """A node's attribute value, or `default`."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class GraphIndex:
    """Producers, readers and constants of `nodes` (a graph's, or a list a pass is building)."""

    def __init__(self, nodes: Iterable[Any], initializers: Iterable[Any] = ()) -> None:
        self.nodes = list(nodes)
        self.producer: dict[str, Any] = {out: node for node in self.nodes for out in node.output}
        self.readers: defaultdict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.readers[name].append(node)
        self.inits: dict[str, Any] = {i.name: i for i in initializers}
        self._consts: dict[str, np.ndarray[Any, Any]] | None = None

    attr = staticmethod(attr)

    @classmethod
    def of(cls, model: Any) -> Self:
        return cls(model.graph.node, model.graph.initializer)

    @property
    def consts(self) -> dict[str, np.ndarray[Any, Any]]:
        """Every constant's value: initializers and `Constant` nodes (made on first use)."""
        if self._consts is None:
            from onnx import numpy_helper

            self._consts = {name: numpy_helper.to_array(i) for name, i in self.inits.items()}
            for node in self.nodes:
                value = node.attribute[0] if node.attribute else None
                if node.op_type == "Constant" and value is not None and value.name == "value":
                    self._consts[node.output[0]] = numpy_helper.to_array(value.t)
        return self._consts

    def op(self, name: str, *ops: str) -> Any:
        """The node that produces `name`, if it is one of `ops`; else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type in ops else None

    def only_reader(self, name: str, *ops: str) -> Any:
        """The one node that reads `name`, if there is one and it is one of `ops`; else None."""
        users = self.readers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type in ops else None

    def scalar(self, name: str) -> float | None:
        """A float constant of one element, else None."""
        value = self.consts.get(name)
        if value is None or value.size != 1 or value.dtype.kind != "f":
            return None
        return float(value.reshape(-1)[0])


def opset_of(model: Any) -> int | None:
    """The model's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """Nodes that contribute to a graph output, in their order."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    alive: set[int] = set()
    stack = [producer[o] for o in outputs if o in producer]
    while stack:
        i = stack.pop()
        if i in alive:
            continue
        alive.add(i)
        stack.extend(producer[x] for x in nodes[i].input if x in producer)
    return [n for i, n in enumerate(nodes) if i in alive]


def drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

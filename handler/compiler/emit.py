"""Node emission for the per-token rewrite: the nodes that quantise one GEMM input per row
(`Emitter.quantise_input`) and the integer GEMM of each of its consumers (`Emitter.gemm`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.compiler.graph import GELU_MIN, opset_of
from handler.compiler.passes import BLOCKED_OPSET
from handler.compiler.patterns import row_sources
from handler.compiler.planning import InputPlan
from handler.compiler.targets import PerTokenRecipe
from handler.compiler.weights import block_rotation, quantize_weight, split_weight


@dataclass(frozen=True)
class Quantised:
    """The tensors of one quantised GEMM input, shared by all its consumers."""

    q: str
    amax: str
    step: str
    zero_point: str
    kind: str
    plan: InputPlan
    apart: str = ""  # the fp32 channels, gathered


GELU_APART_SHIFT = -1.0e30  # added to a GELU output's fp32 channels: quantised to 0


class Emitter:
    def __init__(self, model: Any, recipe: PerTokenRecipe) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.model, self.recipe = model, recipe
        self.new_inits: list[Any] = []
        opset = opset_of(model) or 17
        # ReduceMax takes its axes as an input from opset 18 on, as an attribute before.
        if opset >= 18:
            self.axes_in, self.axes_attr = [self.const("pt/axes", np.array([-1]))], {}
        else:
            self.axes_in, self.axes_attr = [], {"axes": [-1]}
        # Opset 21's QuantizeLinear takes one scale per block of the last axis: one block per
        # row, so the row's scale goes in directly and no division pass is needed.
        self.blocked = opset >= BLOCKED_OPSET
        self.rows = row_sources(model.graph)
        self.row_zero_points: dict[tuple[str, int], str] = {}

    def const(self, name: str, value: np.ndarray[Any, Any]) -> str:
        self.new_inits.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        domain = "com.microsoft" if op == "MatMulIntegerToFloat" else ""
        return self.helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)

    def quantise_input(
        self, src: str, tag: str, kind: str, plan: InputPlan, channels: int
    ) -> tuple[list[Any], str, str, str, str]:
        """Nodes that quantise `src` ([..., channels]) per row: (nodes, u8 tensor, row amax,
        step, zero point). The plan's divisor multiplies the input first (after GELU's shift);
        its split channel's copies are appended first (Gather, Concat)."""
        r = self.recipe.bits_for(kind)
        rows = self.rows.get(src, src)
        nodes = []
        divisor = plan.divisor
        if kind == "gelu":
            qmax, zp = r.max_u8, 0
            shift = np.array(GELU_MIN, dtype=np.float32)
            if divisor is not None and plan.smooth is None:
                # The fp32 channels (divisor 0) are shifted far below 0 instead: they round to
                # 0 and do not set the row's scale. The same Add, no masking pass.
                shift = np.where(divisor == 0, GELU_APART_SHIFT, GELU_MIN).astype(np.float32)
                divisor = None
            nodes.append(
                self.node("Add", [src, self.const(f"{tag}/shift", shift)], f"{tag}/shifted")
            )
            src = f"{tag}/shifted"
        else:
            qmax, zp = r.symmetric_qmax, r.zero_point
        if plan.split is not None:  # x, then m copies of its split channel
            channel, fractions = plan.split
            index = self.const(f"{tag}/split_index", np.full(len(fractions), channel))
            nodes += [
                self.node("Gather", [src, index], f"{tag}/split_copies", axis=-1),
                self.node("Concat", [src, f"{tag}/split_copies"], f"{tag}/split", axis=-1),
            ]
            src = f"{tag}/split"
            whole = divisor if divisor is not None else np.ones(channels, dtype=np.float32)
            divisor = np.concatenate([whole, fractions])
            channels += len(fractions)
        if divisor is not None:
            inv = self.const(f"{tag}/unsmooth", divisor.astype(np.float32))
            nodes.append(self.node("Mul", [src, inv], f"{tag}/smoothed"))
            src = f"{tag}/smoothed"
        if plan.rotation is not None:  # x R block by block: [..., K] -> [-1, K/b, b] -> back
            b = plan.rotation.shape[0]
            key = (rows, -channels)  # the input's shape, made once per rows and width
            if key not in self.row_zero_points:
                nodes.append(self.node("Shape", [src], f"{tag}/shape"))
                self.row_zero_points[key] = f"{tag}/shape"
            blocks = self.const(f"{tag}/blocks", np.array([-1, channels // b, b], np.int64))
            rot = self.const(f"{tag}/rotation", plan.rotation.astype(np.float32))
            nodes += [
                self.node("Reshape", [src, blocks], f"{tag}/blocked"),
                self.node("MatMul", [f"{tag}/blocked", rot], f"{tag}/rotated_blocks"),
                self.node(
                    "Reshape",
                    [f"{tag}/rotated_blocks", self.row_zero_points[key]],
                    f"{tag}/rotated",
                ),
            ]
            src = f"{tag}/rotated"
        if kind == "gelu":
            amax_in = src
        else:
            nodes.append(self.node("Abs", [src], f"{tag}/abs"))
            amax_in = f"{tag}/abs"
        step = self.const(f"{tag}/step", np.array(1.0 / qmax, dtype=np.float32))
        zp_name = self.const(f"{tag}/zero_point", np.array(zp, dtype=np.uint8))
        nodes.append(
            self.node(
                "ReduceMax", [amax_in, *self.axes_in], f"{tag}/amax", keepdims=1, **self.axes_attr
            )
        )
        if self.blocked:
            # scale = amax / qmax per row; the zero point as a tensor of the same shape
            # (QuantizeLinear of amax by a huge scale: 0 + the zero point, on every row).
            nodes.append(self.node("Mul", [f"{tag}/amax", step], f"{tag}/row_step"))
            row_zp = []  # none: uint8 from 0
            if zp and (rows, zp) in self.row_zero_points:  # inputs with the same rows share it
                row_zp = [self.row_zero_points[rows, zp]]
            elif zp:
                huge = self.const(f"{tag}/huge", np.array(1.0e30, dtype=np.float32))
                nodes.append(
                    self.node("QuantizeLinear", [f"{tag}/amax", huge, zp_name], f"{tag}/row_zp")
                )
                row_zp = [f"{tag}/row_zp"]
                self.row_zero_points[rows, zp] = row_zp[0]
            nodes.append(
                self.node(
                    "QuantizeLinear",
                    [src, f"{tag}/row_step", *row_zp],
                    f"{tag}/q",
                    axis=-1,
                    block_size=channels,
                )
            )
        else:
            nodes += [
                self.node("Div", [src, f"{tag}/amax"], f"{tag}/unit"),
                self.node("QuantizeLinear", [f"{tag}/unit", step, zp_name], f"{tag}/q"),
            ]
        return nodes, f"{tag}/q", f"{tag}/amax", step, zp_name

    def gemm(self, quantised: Quantised, weight: np.ndarray[Any, Any], out: str) -> list[Any]:
        """The integer GEMM of one consumer of a quantised input (its weight as in the fp32
        graph), with the plan's smoothing, fp32 channels and error-compensated rounding."""
        plan, kind = quantised.plan, quantised.kind
        bits = self.recipe.bits_for(kind)
        hessian = plan.hessian
        tag = out + "/pt"
        nodes = []
        parts = [f"{tag}/scaled"]
        if plan.apart is not None:  # the outlier channels' rows stay fp32, on the exact values
            kept = self.const(f"{tag}/w_apart", weight[plan.apart, :].astype(np.float32))
            nodes.append(self.node("MatMul", [quantised.apart, kept], f"{tag}/apart"))
            parts.append(f"{tag}/apart")
            weight = weight.copy()
            weight[plan.apart, :] = 0.0
        if plan.smooth is not None:  # x W = (x / s)(s W): s into the weight rows
            weight = weight * plan.smooth[:, None].astype(np.float32)
        if plan.split is not None:
            weight = split_weight(weight, plan)
        if plan.rotation is not None:  # (x R)(R^T W)
            full = block_rotation(plan.rotation.astype(np.float64), weight.shape[0])
            weight = (full.T @ weight.astype(np.float64)).astype(np.float32)
        wq, ws = quantize_weight(weight, bits.weight_qmax, hessian)
        inputs = [
            quantised.q,
            self.const(f"{tag}/w_int8", wq),
            quantised.step,
            self.const(f"{tag}/w_scale", ws),
            quantised.zero_point,
        ]
        nodes[:0] = [
            self.node("MatMulIntegerToFloat", inputs, f"{tag}/y"),
            self.node("Mul", [f"{tag}/y", quantised.amax], parts[0]),
        ]
        if kind == "gelu":  # (A + c) W = A W + c colsum(W): take the constant back out
            rows = wq.astype(np.float32) * ws
            if plan.smooth is not None:
                rows = rows / plan.smooth[:, None].astype(np.float32)
            parts.append(
                self.const(f"{tag}/unshift", (-GELU_MIN * rows.sum(axis=0)).astype(np.float32))
            )
        # Sum the parts, the constant last: fold_unshift folds it into the bias Add after.
        for i in range(1, len(parts)):
            into = out if i == len(parts) - 1 else f"{tag}/sum{i}"
            nodes.append(
                self.node("Add", [parts[0] if i == 1 else f"{tag}/sum{i - 1}", parts[i]], into)
            )
        if len(parts) == 1:
            nodes[1].output[0] = out
            nodes[1].name = out
        return nodes

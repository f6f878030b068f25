"""Per-input planning: from an input's calibration statistics and its consumers' weights, how
it is quantised (`InputPlan`): centring offset, smoothing, fp32 channels, split channel,
Hadamard rotation, and the second moments its weights are rounded against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.compiler.targets import Refinements
from handler.compiler.weights import block_rotation, hadamard, smoothing, split_fractions


@dataclass(frozen=True)
class InputPlan:
    """How one GEMM input is quantised: per-channel divisors (smoothing), channels kept in fp32,
    and the second moments its consumers' weights are rounded against."""

    smooth: np.ndarray[Any, Any] | None = None  # [K]: x / s is quantised, s W is the weight
    apart: np.ndarray[Any, Any] | None = None  # channel indices kept in fp32
    hessian: np.ndarray[Any, Any] | None = None  # [K, K] of what is quantised
    # What the input is multiplied by before quantisation: 1/s, and 0 on the fp32 channels so
    # that they do not set the row's scale.
    divisor: np.ndarray[Any, Any] | None = None
    # Subtracted from the input before quantisation (0 on the fp32 channels); offset @ W goes
    # back in through the consumers' biases.
    offset: np.ndarray[Any, Any] | None = None
    # (channel, fractions f[m]): the channel leaves the input (divisor 0) and m copies f_j x
    # are appended; the weight gets m rows W[channel] / (m f_j) (see `Refinements.split`).
    split: tuple[int, np.ndarray[Any, Any]] | None = None
    # [b, b] orthogonal: the (smoothed) input is multiplied by it block by block before
    # quantisation, the weight by its transpose (`Refinements.rotate`).
    rotation: np.ndarray[Any, Any] | None = None


def rotatable(refine: Refinements, channels: int) -> bool:
    """Whether `Refinements.rotate` applies to a LayerNorm output this wide."""
    return bool(refine.rotate) and channels % (refine.rotate or 1) == 0


def plan_input(
    kind: str,
    stats: Any,
    weights: list[np.ndarray[Any, Any]],
    refine: Refinements,
    centrable: bool = False,
    foldable: bool = False,
) -> InputPlan:
    """The plan for one input from its calibration statistics (None: plain). `centrable`: the
    rewrite can subtract a per-channel offset for free (see `Refinements.centre`);
    `foldable`: an attention output whose value projection can take the smoothing."""
    if stats is None:
        return InputPlan()
    k = stats.absmax.shape[0]
    offset = None
    absmax = stats.absmax
    if centrable and refine.centre and kind in ("norm", "other"):
        offset = np.asarray(stats.mean, dtype=np.float64)
        absmax = stats.centred_absmax(offset)
    apart = None
    if kind in refine.apart_kinds and 0 < refine.apart < k:
        apart = np.sort(np.argsort(-absmax, kind="stable")[: refine.apart]).astype(np.int64)
    if offset is not None and apart is not None:  # the fp32 channels keep their own values
        offset = offset.copy()
        offset[apart] = 0.0
    rotating = kind == "norm" and rotatable(refine, k)
    smooth = None
    alpha = refine.smooth_alpha if kind == "norm" and not rotating else None
    if kind == "other" and foldable:
        alpha = refine.attention_alpha
    if alpha is not None:
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        smooth = smoothing(absmax, wmax, alpha)
    hessian = None
    if refine.gptq:
        hessian = stats.hessian if offset is None else stats.centred_hessian(offset)
        if smooth is not None:
            hessian = hessian / np.outer(smooth, smooth)
        if apart is not None:  # those rows are zero in the int8 weight
            hessian = hessian.copy()
            hessian[apart, :] = 0.0
            hessian[:, apart] = 0.0
    divisor = None
    if smooth is not None or apart is not None:
        divisor = (1.0 / smooth if smooth is not None else np.ones(k)).astype(np.float32)
        if apart is not None:
            divisor[apart] = 0.0
    split = None
    if (
        kind == "norm"
        and refine.split is not None
        and smooth is not None
        and apart is None
        and not rotating
    ):
        split = split_fractions(absmax, smooth, refine.split, refine.split_copies)
        channel, fractions = split
        divisor = (1.0 / smooth).astype(np.float32)
        divisor[channel] = 0.0
        if hessian is not None:  # of the input as quantised: G^T H G, G maps x to it
            raw = stats.hessian if offset is None else stats.centred_hessian(offset)
            g = np.zeros((k, k + len(fractions)))
            g[np.arange(k), np.arange(k)] = 1.0 / smooth
            g[channel, channel] = 0.0
            g[channel, k:] = fractions
            hessian = g.T @ raw @ g
    rotation = None
    if rotating and refine.rotate:
        rotation = hadamard(refine.rotate)
        if hessian is not None:
            full = block_rotation(rotation, k)
            hessian = full.T @ hessian @ full
    return InputPlan(smooth, apart, hessian, divisor, offset, split, rotation)

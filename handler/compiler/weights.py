"""Weight arithmetic: symmetric int8 per output column, error-compensated rounding (GPTQ), the
Hadamard rotation, SmoothQuant's factors and the split channel's extra weight rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from handler.compiler.planning import InputPlan


def quantize_weight(
    w: np.ndarray[Any, Any], qmax: int, hessian: np.ndarray[Any, Any] | None = None
) -> tuple[np.ndarray[Any, Any], Any]:
    """Symmetric per-column int8: W ~= W_q * scale[col]. With the input's second moments
    (`hessian`, [K, K]) the rows are rounded one after another, each row's rounding error
    compensated in the rows not yet rounded (GPTQ, Frantar et al. 2022): the same integers at
    run time, a smaller output error on inputs like the calibration's."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    if hessian is None:
        q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
        return q, scale
    return _gptq(w, scale, qmax, hessian), scale


GPTQ_DAMP = 0.01  # of the mean diagonal, added to the diagonal: keeps the inverse well-posed


GPTQ_BLOCK = 128


GPTQ_RETRIES = 4


def _gptq(
    w: np.ndarray[Any, Any], scale: np.ndarray[Any, Any], qmax: int, hessian: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    k = w.shape[0]
    h = np.array(hessian, dtype=np.float64)
    work = np.array(w, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    work[dead, :] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")  # largest inputs first ("act order")
    work, h = work[order], h[np.ix_(order, order)]
    h = (h + h.T) / 2
    # Upper Cholesky factor of H^-1: row i holds how rounding row i moves the later rows. Second
    # moments summed in float32 (or centred: a near-constant channel's variance is a small
    # difference of large numbers) can come out slightly indefinite: damp more until they
    # are not, else round to nearest.
    damp = GPTQ_DAMP * float(np.mean(np.diag(h)))
    for _ in range(GPTQ_RETRIES):
        try:
            u = np.linalg.cholesky(np.linalg.inv(h + damp * np.eye(k))).T
            break
        except np.linalg.LinAlgError:
            damp *= 10
    else:
        out = np.empty_like(work)
        out[order] = np.clip(np.rint(work / scale.astype(np.float64)), -qmax, qmax)
        return out.astype(np.int8)
    s = scale.astype(np.float64)
    q = np.zeros_like(work)
    for i1 in range(0, k, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, k)
        block = work[i1:i2].copy()
        errors = np.zeros_like(block)
        ub = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            row = block[i]
            qi = np.clip(np.rint(row / s), -qmax, qmax)
            q[i1 + i] = qi
            err = (row - qi * s) / ub[i, i]
            block[i:] -= np.outer(ub[i, i:], err)
            errors[i] = err
        work[i2:] -= u[i1:i2, i2:].T @ errors
    out = np.empty_like(q)
    out[order] = q
    return out.astype(np.int8)


def hadamard(n: int) -> np.ndarray[Any, Any]:
    """The n x n orthonormal Hadamard matrix (Sylvester; n a power of 2)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    if h.shape[0] != n:
        raise ValueError(f"no Sylvester Hadamard matrix of order {n}")
    return np.asarray(h / np.sqrt(n), dtype=np.float64)


def block_rotation(rotation: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """The [k, k] block-diagonal matrix with `rotation` on its diagonal."""
    return np.kron(np.eye(k // rotation.shape[0]), rotation)


def smoothing(
    absmax: np.ndarray[Any, Any], wmax: np.ndarray[Any, Any], alpha: float
) -> np.ndarray[Any, Any]:
    """SmoothQuant's per-channel factor: x / s into the activations, s into the weight rows."""
    a = np.maximum(absmax, 1e-5)
    w = np.maximum(wmax, 1e-5)
    s = a**alpha / w ** (1.0 - alpha)
    return np.asarray(s / np.exp(np.mean(np.log(s))), dtype=np.float64)


SPLIT_OCTAVE = 2.0  # the copies' fractions span [f, 2f): different rounding grids


def split_fractions(
    absmax: np.ndarray[Any, Any], smooth: np.ndarray[Any, Any], margin: float, most: int
) -> tuple[int, np.ndarray[Any, Any]]:
    """(channel, fractions) for `Refinements.split`: the channel with the largest smoothed
    maximum, and m fractions f_j of it whose largest copy is at most 1/`margin` of the next
    channel's smoothed maximum (m <= `most`)."""
    smoothed = absmax / smooth
    channel = int(np.argmax(smoothed))
    ceiling = float(np.max(np.delete(smoothed, channel))) / margin
    ratio = float(smoothed[channel]) / max(ceiling, 1e-12)
    m = int(min(most, max(2, np.ceil(SPLIT_OCTAVE * ratio))))
    grids = 1.0 + np.arange(m) / m * (SPLIT_OCTAVE - 1.0)
    top = max(float(absmax[channel]), 1e-12)
    return channel, np.asarray(grids * ceiling / (SPLIT_OCTAVE * top), dtype=np.float64)


def split_weight(weight: np.ndarray[Any, Any], plan: InputPlan) -> np.ndarray[Any, Any]:
    """The (smoothed) weight for the split input: the channel's row zero, and m rows
    W[channel] / (m f_j) below, one per copy f_j x: sum_j (f_j x) W / (m f_j) = x W."""
    if plan.split is None:
        return weight
    channel, fractions = plan.split
    row = weight[channel].astype(np.float64)
    if plan.smooth is not None:
        row = row / plan.smooth[channel]
    out = weight.astype(np.float64)
    out[channel] = 0.0
    copies = row[None, :] / (len(fractions) * fractions[:, None])
    return np.concatenate([out, copies]).astype(np.float32)

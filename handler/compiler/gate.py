"""The gate: the int8 graph against the fp32 graph on labelled text, before it is accepted.

The labelled data is split in two by a hash of each text (independent of file order): recipes
are chosen on the selection part, and the gate's figures are measured on the report part, which
the choice never saw, so the figures carry no selection bias.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np

from handler.compiler import progress
from handler.datafiles import Labelled
from handler.errors import GateFailed
from handler.evaluate import multi_hot
from handler.inference import Classifier
from handler.inference.postprocess import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from handler.inference.tokenizer import TextInput

# Padded batch sizes the invariance check runs, each in length-sorted and in shuffled order.
INVARIANCE_BATCH_SIZES = (2, 3, 8, 17, 32, 64)
SELECTION_SHARE = 3  # one text in 3 chooses the recipe; the other 2 report


@dataclass(frozen=True)
class Gate:
    max_accuracy_drop: float = 0.5  # percentage points
    # Single-label: the share of texts whose top label is fp32's. Multi-label: the share of
    # (text, label) decisions at 0.5 that are fp32's.
    min_agreement: float = 0.985
    # A text's scores alone and in any padded batch: float noise only, never a label change.
    max_batch_score_diff: float = 1e-5
    # Regression: the largest mean absolute difference from fp32's outputs, in the outputs'
    # units; None means 2% of the spread (standard deviation) of fp32's outputs on the data,
    # and never less than 0.001 (a head whose outputs barely vary has no spread to scale by).
    max_regression_error: float | None = None
    REGRESSION_SPREAD_SHARE = 0.02
    REGRESSION_FLOOR = 1e-3


def split(data: Labelled) -> tuple[Labelled, Labelled]:
    """(selection, report): a text's part depends on its bytes only, not on the file's order."""
    parts: tuple[Labelled, Labelled] = (Labelled([], []), Labelled([], []))
    for text, label in zip(data.texts, data.labels, strict=True):
        key = text if isinstance(text, str) else "\t".join(text)  # a pair: both members
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        part = parts[0] if int.from_bytes(digest[:4], "big") % SELECTION_SHARE == 0 else parts[1]
        part.texts.append(text)
        part.labels.append(label)
    if not parts[0].texts or not parts[1].texts:  # tiny data: alternate instead
        parts = (
            Labelled(data.texts[::2], data.labels[::2]),
            Labelled(data.texts[1::2], data.labels[1::2]),
        )
    return parts


PROGRESS_CHUNK = 64  # texts per progress step


def scores(
    classifier: Classifier,
    texts: Sequence[TextInput],
    desc: str = "scoring",
    function: str | None = None,
) -> np.ndarray[Any, Any]:
    parts = []
    with progress.bar(len(texts), desc, unit="text", leave=False) as shown:
        for start in range(0, len(texts), PROGRESS_CHUNK):
            chunk = texts[start : start + PROGRESS_CHUNK]
            parts.append(classifier.answer(chunk, function_to_apply=function).scores)
            shown.update(len(chunk))
    if not parts:
        return np.zeros((0, len(classifier.id2label)), dtype=np.float32)
    return np.concatenate(parts)


def gate_function(task: str) -> str | None:
    """The scores the gate compares: a regression head's raw outputs, else the model's own
    function (softmax, or sigmoid for multi-label)."""
    return "none" if task == REGRESSION else None


def compare(
    ref_scores: np.ndarray[Any, Any],
    cand_scores: np.ndarray[Any, Any],
    labels: list[Any],
    task: str = SINGLE_LABEL,
) -> dict[str, Any]:
    """fp32 (reference) against int8 (candidate), as the task means it: top-label accuracy and
    agreement (single-label), per-label decisions at 0.5 (multi-label), output error
    (regression); and the score differences, for all."""
    diff = np.abs(ref_scores.astype(np.float64) - cand_scores.astype(np.float64))
    out: dict[str, Any] = {
        "task": task,
        "n": len(labels),
        "max_score_diff": round(float(diff.max()), 5) if diff.size else 0.0,
        "mean_score_diff": round(float(diff.mean()), 6) if diff.size else 0.0,
    }
    if task == REGRESSION:
        gold = np.asarray(labels, dtype=np.float64)
        ref, cand = ref_scores[:, 0].astype(np.float64), cand_scores[:, 0].astype(np.float64)
        out.update(
            {
                "reference_mae": round(float(np.abs(ref - gold).mean()), 6),
                "candidate_mae": round(float(np.abs(cand - gold).mean()), 6),
                "reference_output_std": round(float(ref.std()), 6),
            }
        )
        return out
    if task == MULTI_LABEL:
        gold_hot = multi_hot(labels, ref_scores.shape[1])
        ref_dec, cand_dec = ref_scores >= 0.5, cand_scores >= 0.5
        ref_acc = float((ref_dec == gold_hot).mean())
        cand_acc = float((cand_dec == gold_hot).mean())
        agreement = float((ref_dec == cand_dec).mean())
        out["texts_with_every_decision_agreeing"] = round(
            float((ref_dec == cand_dec).all(axis=1).mean()), 4
        )
    else:
        gold = np.asarray(labels)
        ref_pred, cand_pred = ref_scores.argmax(1), cand_scores.argmax(1)
        ref_acc = float((ref_pred == gold).mean())
        cand_acc = float((cand_pred == gold).mean())
        agreement = float((ref_pred == cand_pred).mean())
    out.update(
        {
            "reference_accuracy": round(ref_acc, 4),
            "candidate_accuracy": round(cand_acc, 4),
            "accuracy_drop_points": round((ref_acc - cand_acc) * 100, 2),
            "agreement": round(agreement, 4),
        }
    )
    return out


def batch_invariance(
    candidate: Classifier,
    texts: Sequence[TextInput],
    sizes: tuple[int, ...] = INVARIANCE_BATCH_SIZES,
) -> dict[str, Any]:
    """Each text alone vs inside padded batches of every size, length-sorted and shuffled."""
    encoded = candidate.tokenizer.encode(texts)
    alone = np.concatenate([candidate.logits([e]) for e in encoded])
    alone_scores = candidate.scores_from_logits(alone)
    worst_diff, flips, runs = 0.0, 0, []
    rng = random.Random(0)
    shown = progress.bar(len(texts) * len(sizes) * 2, "batch invariance", unit="text", leave=False)
    by_length = sorted(range(len(encoded)), key=lambda i: encoded[i].length)
    for size in sizes:
        shuffled = list(range(len(encoded)))
        rng.shuffle(shuffled)
        for order_name, order in (("sorted", by_length), ("shuffled", shuffled)):
            logits = np.zeros_like(alone)
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                logits[idx] = candidate.logits([encoded[i] for i in idx])
                shown.update(len(idx))
            batched = candidate.scores_from_logits(logits)
            diff = float(np.abs(batched - alone_scores).max())
            flip = int((batched.argmax(1) != alone_scores.argmax(1)).sum())
            runs.append({"batch": size, "order": order_name, "max_score_diff": diff, "flips": flip})
            worst_diff, flips = max(worst_diff, diff), max(flips, flip)
    shown.close()
    # Texts of equal token length run together, never padded: what "same_length" batching
    # serves where padded rows are not exact on the target.
    same = np.zeros_like(alone)
    groups = [list(g) for _, g in groupby(by_length, key=lambda i: encoded[i].length)]
    batched_rows = 0
    for group in groups:
        for start in range(0, len(group), max(sizes)):
            idx = group[start : start + max(sizes)]
            same[idx] = candidate.logits([encoded[i] for i in idx])
            batched_rows += len(idx) if len(idx) > 1 else 0
    same_diff = float(np.abs(candidate.scores_from_logits(same) - alone_scores).max())
    return {
        "n": len(texts),
        "batch_sizes": list(sizes),
        "max_score_diff": worst_diff,
        "label_flips": flips,
        "runs": runs,
        "same_length": {"max_score_diff": same_diff, "texts_batched": batched_rows},
    }


def throughput(candidate: Classifier, texts: Sequence[TextInput]) -> dict[str, float]:
    """Texts/s as served (length-sorted micro-batches) and one text per run, same session."""
    start = time.perf_counter()
    candidate.answer(texts)
    served = time.perf_counter() - start
    encoded = candidate.tokenizer.encode(texts)
    start = time.perf_counter()
    for e in encoded:
        candidate.logits([e])
    one_by_one = time.perf_counter() - start
    return {
        "served_texts_per_s": round(len(texts) / served, 1),
        "one_text_per_run_texts_per_s": round(len(texts) / one_by_one, 1),
    }


def regression_threshold(figures: dict[str, Any], gate: Gate) -> float:
    if gate.max_regression_error is not None:
        return gate.max_regression_error
    spread = float(figures.get("reference_output_std", 0.0))
    return round(max(Gate.REGRESSION_SPREAD_SHARE * spread, Gate.REGRESSION_FLOOR), 6)


def failures(figures: dict[str, Any], gate: Gate) -> list[str]:
    failed = []
    if figures.get("task") == REGRESSION:
        if figures["mean_score_diff"] > regression_threshold(figures, gate):
            failed.append("regression_error")
    else:
        if figures["accuracy_drop_points"] > gate.max_accuracy_drop:
            failed.append("accuracy_drop")
        if figures["agreement"] < gate.min_agreement:
            failed.append("agreement")
    invariance = figures.get("batch_invariance")
    if invariance is not None and (
        invariance["max_score_diff"] > gate.max_batch_score_diff or invariance["label_flips"]
    ):
        failed.append("batch_invariance")
    return failed


def gate_figures(gate: Gate, figures: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_accuracy_drop_points": gate.max_accuracy_drop,
        "min_agreement": gate.min_agreement,
        "max_batch_score_diff": gate.max_batch_score_diff,
    }
    if figures is not None and figures.get("task") == REGRESSION:
        out["max_regression_mean_abs_diff"] = regression_threshold(figures, gate)
    return out


def report(
    reference: Classifier,
    candidate: Classifier,
    data: Labelled,
    gate: Gate,
    task: str = SINGLE_LABEL,
    on_target: Any = None,
    artifact: Any = None,
) -> dict[str, Any]:
    """Figures of the candidate against the reference; `failed` names every measure that failed.
    With `on_target` (an on_target.Emulator), the candidate's scores and batch invariance are
    the shipped `artifact` folder's on the emulated target CPU; throughput stays the host's."""
    function = gate_function(task)
    if on_target is not None:
        candidate_scores = on_target.scores(artifact, data.texts, function)
        invariance = on_target.batch_invariance(artifact, data.texts)
    else:
        candidate_scores = scores(candidate, data.texts, "int8 candidate", function)
        invariance = batch_invariance(candidate, data.texts)
    report = compare(
        scores(reference, data.texts, "fp32 reference", function),
        candidate_scores,
        data.labels,
        task,
    )
    report["batch_invariance"] = invariance
    report["throughput"] = throughput(candidate, data.texts)
    report["gate"] = gate_figures(gate, report)
    report["failed"] = failures(report, gate)
    return report


def check(report: dict[str, Any], where: str = "the report split") -> None:
    if report["failed"]:
        inv = report.get("batch_invariance") or {}
        details = {
            "accuracy_drop": f"accuracy drop {report.get('accuracy_drop_points')} points "
            f"> {report['gate']['max_accuracy_drop_points']}",
            "agreement": f"agreement {report.get('agreement')} < {report['gate']['min_agreement']}",
            "regression_error": f"mean absolute difference from fp32 {report['mean_score_diff']} "
            f"> {report['gate'].get('max_regression_mean_abs_diff')}",
            "batch_invariance": "scores change with batch-mates by "
            f"{inv.get('max_score_diff')} ({inv.get('label_flips')} label changes)",
        }
        if "unlabelled" in report:
            from handler.compiler.agreement import AgreementGate, explain

            gate = report["unlabelled"]["gate"]
            details.update(explain(report["unlabelled"], AgreementGate(**gate)))
        reasons = "; ".join(details[name] for name in report["failed"])
        raise GateFailed(
            f"verification failed on {where} (n={report['n']}, "
            f"{', '.join(report['failed'])}): {reasons}"
        )

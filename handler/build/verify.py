"""The gate: the int8 graph against the fp32 graph on labelled text, before it is accepted.

The labelled data is split in two by a hash of each text (independent of file order): recipes
are chosen on the selection part, and the gate's figures are measured on the report part, which
the choice never saw, so the figures carry no selection bias.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.build import progress
from handler.errors import GateFailed
from handler.evaluate import Labelled
from handler.inference import Classifier

# Padded batch sizes the invariance check runs, each in length-sorted and in shuffled order.
INVARIANCE_BATCH_SIZES = (2, 3, 8, 17, 32, 64)
SELECTION_SHARE = 3  # one text in 3 chooses the recipe; the other 2 report


@dataclass(frozen=True)
class Gate:
    max_accuracy_drop: float = 0.5  # percentage points
    min_agreement: float = 0.985
    # A text's scores alone and in any padded batch: float noise only, never a label change.
    max_batch_score_diff: float = 1e-5


def split(data: Labelled) -> tuple[Labelled, Labelled]:
    """(selection, report): a text's part depends on its bytes only, not on the file's order."""
    parts: tuple[Labelled, Labelled] = (Labelled([], []), Labelled([], []))
    for text, label in zip(data.texts, data.labels, strict=True):
        digest = hashlib.sha256(text.encode("utf-8")).digest()
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


def scores(classifier: Classifier, texts: list[str], desc: str = "scoring") -> np.ndarray[Any, Any]:
    parts = []
    with progress.bar(len(texts), desc, unit="text", leave=False) as shown:
        for start in range(0, len(texts), PROGRESS_CHUNK):
            chunk = texts[start : start + PROGRESS_CHUNK]
            parts.append(classifier.scores(classifier.run(chunk), None))
            shown.update(len(chunk))
    if not parts:
        return np.zeros((0, len(classifier.id2label)), dtype=np.float32)
    return np.concatenate(parts)


def compare(
    ref_scores: np.ndarray[Any, Any], cand_scores: np.ndarray[Any, Any], labels: list[int]
) -> dict[str, Any]:
    """Accuracy of each, the drop, label agreement and score differences."""
    gold = np.asarray(labels)
    ref_pred, cand_pred = ref_scores.argmax(1), cand_scores.argmax(1)
    ref_acc = float((ref_pred == gold).mean())
    cand_acc = float((cand_pred == gold).mean())
    diff = np.abs(ref_scores - cand_scores)
    return {
        "n": len(gold),
        "reference_accuracy": round(ref_acc, 4),
        "candidate_accuracy": round(cand_acc, 4),
        "accuracy_drop_points": round((ref_acc - cand_acc) * 100, 2),
        "agreement": round(float((ref_pred == cand_pred).mean()), 4),
        "max_score_diff": round(float(diff.max()), 5),
        "mean_score_diff": round(float(diff.mean()), 6),
    }


def batch_invariance(
    candidate: Classifier, texts: list[str], sizes: tuple[int, ...] = INVARIANCE_BATCH_SIZES
) -> dict[str, Any]:
    """Each text alone vs inside padded batches of every size, length-sorted and shuffled."""
    encoded = candidate.tokenizer.encode(texts)
    alone = np.concatenate([candidate.run_encoded([e]) for e in encoded])
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
                logits[idx] = candidate.run_encoded([encoded[i] for i in idx])
                shown.update(len(idx))
            batched = candidate.scores_from_logits(logits)
            diff = float(np.abs(batched - alone_scores).max())
            flip = int((batched.argmax(1) != alone_scores.argmax(1)).sum())
            runs.append({"batch": size, "order": order_name, "max_score_diff": diff, "flips": flip})
            worst_diff, flips = max(worst_diff, diff), max(flips, flip)
    shown.close()
    return {
        "n": len(texts),
        "batch_sizes": list(sizes),
        "max_score_diff": worst_diff,
        "label_flips": flips,
        "runs": runs,
    }


def throughput(candidate: Classifier, texts: list[str]) -> dict[str, float]:
    """Texts/s as served (length-sorted micro-batches) and one text per run, same session."""
    start = time.perf_counter()
    candidate.run(texts)
    served = time.perf_counter() - start
    encoded = candidate.tokenizer.encode(texts)
    start = time.perf_counter()
    for e in encoded:
        candidate.run_encoded([e])
    one_by_one = time.perf_counter() - start
    return {
        "served_texts_per_s": round(len(texts) / served, 1),
        "one_text_per_run_texts_per_s": round(len(texts) / one_by_one, 1),
    }


def failures(figures: dict[str, Any], gate: Gate) -> list[str]:
    failed = []
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


def gate_figures(gate: Gate) -> dict[str, float]:
    return {
        "max_accuracy_drop_points": gate.max_accuracy_drop,
        "min_agreement": gate.min_agreement,
        "max_batch_score_diff": gate.max_batch_score_diff,
    }


def verify(
    reference: Classifier, candidate: Classifier, data: Labelled, gate: Gate
) -> dict[str, Any]:
    """Figures of the candidate against the reference; `failed` names every measure that failed."""
    report = compare(
        scores(reference, data.texts, "fp32 reference"),
        scores(candidate, data.texts, "int8 candidate"),
        data.labels,
    )
    report["batch_invariance"] = batch_invariance(candidate, data.texts)
    report["throughput"] = throughput(candidate, data.texts)
    report["gate"] = gate_figures(gate)
    report["failed"] = failures(report, gate)
    return report


def check(report: dict[str, Any], where: str = "the report split") -> None:
    if report["failed"]:
        inv = report.get("batch_invariance") or {}
        details = {
            "accuracy_drop": f"accuracy drop {report['accuracy_drop_points']} points "
            f"> {report['gate']['max_accuracy_drop_points']}",
            "agreement": f"agreement {report['agreement']} < {report['gate']['min_agreement']}",
            "batch_invariance": "scores change with batch-mates by "
            f"{inv.get('max_score_diff')} ({inv.get('label_flips')} label changes)",
        }
        reasons = "; ".join(details[name] for name in report["failed"])
        raise GateFailed(
            f"verification failed on {where} (n={report['n']}, "
            f"{', '.join(report['failed'])}): {reasons}"
        )

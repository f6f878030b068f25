"""The gate: the int8 graph against the fp32 graph on labelled text, before it is accepted."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from handler.errors import GateFailed
from handler.evaluate import Labelled
from handler.inference import Classifier


@dataclass(frozen=True)
class Gate:
    max_accuracy_drop: float = 0.5  # percentage points
    min_agreement: float = 0.985
    # Served predictions must not depend on batch-mates (float noise only).
    max_batch_score_diff: float = 1e-5


def _timed_scores(classifier: Classifier, texts: list[str]) -> tuple[np.ndarray[Any, Any], float]:
    start = time.perf_counter()
    scores = classifier.scores(classifier.run(texts), None)
    return scores, time.perf_counter() - start


def batch_invariance(candidate: Classifier, texts: list[str], batch: int = 32) -> dict[str, Any]:
    """Each text scored alone vs. inside a call with all the others, as served; and the same
    graph run naively in padded batches of `batch`, to show what per-text serving buys and costs."""
    alone = np.concatenate([candidate.scores(candidate.run([t]), None) for t in texts])
    served, served_s = _timed_scores(candidate, texts)
    naive_clf = Classifier(
        candidate.session,
        candidate.tokenizer,
        replace(candidate.config, batching="padded", max_batch_size=batch),
    )
    naive, naive_s = _timed_scores(naive_clf, texts)

    def compare(other: np.ndarray[Any, Any]) -> dict[str, Any]:
        return {
            "max_score_diff": float(np.abs(other - alone).max()),
            "label_flips": int((other.argmax(1) != alone.argmax(1)).sum()),
        }

    return {
        "n": len(texts),
        "served": {"mode": candidate.config.batching, **compare(served)},
        f"padded_batch_{batch}": compare(naive),
        "served_texts_per_s": round(len(texts) / served_s, 1),
        f"padded_batch_{batch}_texts_per_s": round(len(texts) / naive_s, 1),
    }


def verify(
    reference: Classifier, candidate: Classifier, data: Labelled, gate: Gate
) -> dict[str, Any]:
    """Figures of the candidate against the reference; `failed` names every measure that failed."""
    ref_scores = reference.scores(reference.run(data.texts), None)
    cand_scores = candidate.scores(candidate.run(data.texts), None)
    gold = np.asarray(data.labels)
    ref_pred, cand_pred = ref_scores.argmax(1), cand_scores.argmax(1)
    ref_acc = float((ref_pred == gold).mean())
    cand_acc = float((cand_pred == gold).mean())
    agreement = float((ref_pred == cand_pred).mean())
    invariance = batch_invariance(candidate, data.texts)
    report: dict[str, Any] = {
        "n": len(gold),
        "reference_accuracy": round(ref_acc, 4),
        "candidate_accuracy": round(cand_acc, 4),
        "accuracy_drop_points": round((ref_acc - cand_acc) * 100, 2),
        "agreement": round(agreement, 4),
        "max_score_diff": round(float(np.abs(ref_scores - cand_scores).max()), 5),
        "mean_score_diff": round(float(np.abs(ref_scores - cand_scores).mean()), 5),
        "batch_invariance": invariance,
        "gate": {
            "max_accuracy_drop_points": gate.max_accuracy_drop,
            "min_agreement": gate.min_agreement,
            "max_batch_score_diff": gate.max_batch_score_diff,
        },
    }
    failed = []
    if report["accuracy_drop_points"] > gate.max_accuracy_drop:
        failed.append("accuracy_drop")
    if agreement < gate.min_agreement:
        failed.append("agreement")
    if invariance["served"]["max_score_diff"] > gate.max_batch_score_diff:
        failed.append("batch_invariance")
    report["failed"] = failed
    return report


def check(report: dict[str, Any]) -> None:
    if report["failed"]:
        details = {
            "accuracy_drop": f"accuracy drop {report['accuracy_drop_points']} points "
            f"> {report['gate']['max_accuracy_drop_points']}",
            "agreement": f"agreement {report['agreement']} < {report['gate']['min_agreement']}",
            "batch_invariance": "served predictions change with batch-mates by "
            f"{report['batch_invariance']['served']['max_score_diff']}",
        }
        reasons = "; ".join(details[name] for name in report["failed"])
        raise GateFailed(f"verification failed ({', '.join(report['failed'])}): {reasons}")

"""A built model measured on labelled text: accuracy and per-label figures (`handler eval`).
The files are read by handler/datafiles.py."""

from __future__ import annotations

from typing import Any

import numpy as np

from handler.datafiles import Labelled
from handler.inference import Classifier
from handler.inference.postprocess import MULTI_LABEL, REGRESSION, SINGLE_LABEL, task_of


def task_for(classifier: Classifier) -> str:
    return task_of(classifier.config.problem_type, classifier.num_labels)


def multi_hot(labels: list[Any], num_labels: int) -> np.ndarray[Any, Any]:
    out = np.zeros((len(labels), num_labels), dtype=bool)
    for row, ids in enumerate(labels):
        out[row, list(ids)] = True
    return out


def evaluate(classifier: Classifier, data: Labelled) -> dict[str, Any]:
    task = task_for(classifier)
    said = classifier.answer(data.texts, function_to_apply="none" if task == REGRESSION else None)
    results = said.results
    if task == REGRESSION:
        out = said.scores[:, 0]
        err = out - np.asarray(data.labels, dtype=np.float64)
        return {
            "task": task,
            "n": len(err),
            "mae": round(float(np.abs(err).mean()), 6),
            "rmse": round(float(np.sqrt((err**2).mean())), 6),
            "truncated": sum(r.truncated for r in results),
        }
    scores = said.scores
    if task == MULTI_LABEL:
        decided = scores >= 0.5
        gold_hot = multi_hot(data.labels, classifier.num_labels)
        return {
            "task": task,
            "n": len(gold_hot),
            "decision_accuracy": round(float((decided == gold_hot).mean()), 4),
            "exact_match": round(float((decided == gold_hot).all(axis=1).mean()), 4),
            "per_label": {
                name: {
                    "n": int(gold_hot[:, i].sum()),
                    "accuracy": round(float((decided[:, i] == gold_hot[:, i]).mean()), 4),
                }
                for i, name in classifier.id2label.items()
            },
            "truncated": sum(r.truncated for r in results),
        }
    pred = scores.argmax(axis=1)
    gold = np.asarray(data.labels)
    per_label = {}
    for i, name in classifier.id2label.items():
        support = int((gold == i).sum())
        predicted = int((pred == i).sum())
        hit = int(((gold == i) & (pred == i)).sum())
        per_label[name] = {
            "n": support,
            "recall": round(hit / support, 4) if support else None,
            "precision": round(hit / predicted, 4) if predicted else None,
        }
    top = scores.max(axis=1)
    return {
        "task": SINGLE_LABEL,
        "accuracy": round(float((pred == gold).mean()), 4),
        "n": len(gold),
        "per_label": per_label,
        "truncated": sum(r.truncated for r in results),
        "mean_top_score": round(float(top.mean()), 4),
        "accuracy_when_top_score_below_0.7": (
            round(float((pred == gold)[top < 0.7].mean()), 4) if (top < 0.7).any() else None
        ),
        "share_top_score_below_0.7": round(float((top < 0.7).mean()), 4),
    }

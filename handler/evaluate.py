"""Labelled text (sentence<TAB>label) -> accuracy and per-label figures for a Classifier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.errors import InvalidInput
from handler.inference import Classifier


@dataclass(frozen=True)
class Labelled:
    texts: list[str]
    labels: list[int]


def _label_id(raw: str, id2label: Mapping[int, str]) -> int | None:
    raw = raw.strip()
    by_name = {name.lower(): i for i, name in id2label.items()}
    if raw.lower() in by_name:
        return by_name[raw.lower()]
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value in id2label else None


def read_labelled(path: Path, id2label: Mapping[int, str]) -> Labelled:
    """Read `text<TAB>label` lines; a label is a label id or name. A first line whose label is
    neither is a header; any later one is an error naming its line."""
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, sep, raw = line.rpartition("\t")
            label = _label_id(raw, id2label) if sep else None
            if label is None:
                if lineno == 1:
                    continue
                raise InvalidInput(
                    f"{path}:{lineno}: expected 'text<TAB>label' with a label in "
                    f"{sorted(id2label)} or {sorted(id2label.values())}, got {raw!r}"
                )
            texts.append(text.strip())
            labels.append(label)
    if not texts:
        raise InvalidInput(f"{path} holds no labelled lines")
    return Labelled(texts, labels)


def evaluate(classifier: Classifier, data: Labelled) -> dict[str, Any]:
    results = classifier.run(data.texts)
    scores = classifier.scores(results, None)
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

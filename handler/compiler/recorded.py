"""The answers the build records for the deploy's pre-traffic check (handler/pre_traffic.py): a
handful of report texts the artifact answers confidently, each with every label's score, and
the tolerance a deployed version's answers must keep to them.

The most confident texts, and only those whose best score leads the next by more than twice the
tolerance: within the tolerance no label can change places, so a right version always passes.
One text per label first, so a version that always answers one label fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handler.inference import Classifier
from handler.inference.postprocess import REGRESSION
from handler.inference.tokenizer import TextInput

RECORDED_TEXTS = 6
# Scores on another CPU (float kernels differ by ISA; per-token rounding amplifies them) stayed
# within 4e-3 of the build host's on the stand-in (docs/building.md, batch invariance and the
# emulated Graviton2): 0.02 is 5x that, and far below what a wrong artifact moves.
SCORE_TOLERANCE = 0.02


def record(classifier: Classifier, texts: Sequence[TextInput], task: str) -> dict[str, Any]:
    """{texts, answers, tolerance} for the manifest: `texts` as the API takes them."""
    answers = classifier.answer(texts).labelled(None)
    chosen: list[int] = []
    if task == REGRESSION:
        chosen = list(range(min(RECORDED_TEXTS, len(texts))))
    else:
        by_label: dict[str, list[int]] = {}
        lead = [r[0]["score"] - (r[1]["score"] if len(r) > 1 else 0.0) for r in answers]
        for i in sorted(range(len(answers)), key=lambda i: -lead[i]):
            if lead[i] > 2 * SCORE_TOLERANCE:
                by_label.setdefault(answers[i][0]["label"], []).append(i)
        while len(chosen) < RECORDED_TEXTS and any(by_label.values()):
            for label in sorted(by_label):
                if by_label[label] and len(chosen) < RECORDED_TEXTS:
                    chosen.append(by_label[label].pop(0))
    tolerance = SCORE_TOLERANCE
    if task == REGRESSION and chosen:  # raw outputs: 2% of their size, at least the default
        tolerance = max(SCORE_TOLERANCE, 0.02 * max(abs(answers[i][0]["score"]) for i in chosen))
    return {
        "texts": [_as_input(texts[i]) for i in chosen],
        "answers": [answers[i] for i in chosen],
        "score_tolerance": tolerance,
    }


def _as_input(text: TextInput) -> Any:
    return text if isinstance(text, str) else {"text": text[0], "text_pair": text[1]}

"""Texts longer than the model reads: truncated (the pipeline's answer), or read whole in windows.

`truncate` keeps the first max_length tokens, as transformers' pipeline does with
`truncation=True`. `windows` cuts a text longer than the model reads into windows of `window`
tokens (special tokens included) that repeat `overlap` tokens of the previous one, classifies
every window (the windows of all texts share the length-sorted padded micro-batches) and
averages the windows' scores. A text that fits the model is read whole either way, so its answer
is the same bit for bit. The defaults were chosen on 1,000 IMDB reviews longer than 512 tokens
(docs/decisions/2026-12-07-long-text.md, `python bench/long_text.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handler.errors import ArtifactError, InvalidInput
from handler.inference.postprocess import FloatArray

TRUNCATE, WINDOWS = "truncate", "windows"
LONG_TEXT_MODES = (TRUNCATE, WINDOWS)
# How the windows' outputs become the text's: the scoring function of the windows' mean logits
# (the default: the most accurate on the long reviews), the mean of the windows' scores (each
# window counts once), or their mean weighted by the text tokens each window holds.
AGGREGATIONS = ("mean_logits", "mean", "token_weighted")


@dataclass(frozen=True)
class Windows:
    """How a long text is cut and its windows' outputs combined. The defaults: on 1,000 IMDB
    reviews longer than 512 tokens the stand-in (int8) is right on 85.6% with windows of 128
    tokens, no overlap, mean logits; 72.9% truncated (docs/decisions/2026-12-07-long-text.md)."""

    window: int = 128
    overlap: int = 0
    aggregation: str = "mean_logits"

    def fit(self, max_length: int) -> Windows:
        """The policy for a model that reads at most `max_length` tokens: a window no longer
        than the model's, its overlap scaled with it."""
        if self.window <= max_length:
            return self
        overlap = self.overlap * max_length // self.window
        return Windows(max_length, overlap, self.aggregation)

    def check(self, max_length: int, special_tokens: int) -> None:
        if not special_tokens < self.window <= max_length:
            raise ArtifactError(
                f"long-text window of {self.window} tokens: must hold more than the "
                f"{special_tokens} special tokens and at most the model's {max_length}"
            )
        if not 0 <= self.overlap < self.window - special_tokens:
            raise ArtifactError(
                f"long-text overlap of {self.overlap} tokens: must be below the window's "
                f"{self.window - special_tokens} text tokens"
            )
        if self.aggregation not in AGGREGATIONS:
            raise ArtifactError(f"long-text aggregation must be one of {AGGREGATIONS}")


def check_mode(mode: object) -> str:
    if mode not in LONG_TEXT_MODES:
        raise InvalidInput(f"long_text must be one of {', '.join(LONG_TEXT_MODES)}, got {mode!r}")
    return str(mode)


def combine(scores: FloatArray, weights: Sequence[int], aggregation: str) -> FloatArray:
    """One text's scores from its windows' (windows x labels), after the scoring function
    (`mean` or `token_weighted`; `mean_logits` is applied before it, by the classifier)."""
    if len(scores) == 1:
        first: FloatArray = scores[0]
        return first
    if aggregation == "token_weighted":
        w = np.asarray(weights, dtype=np.float32)
        out: FloatArray = (scores * w[:, None]).sum(0) / w.sum()
        return out
    mean: FloatArray = scores.mean(0)
    return mean

"""Logits -> scores -> the transformers text-classification pipeline's output shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from handler.errors import InvalidInput

FloatArray = npt.NDArray[np.float32]
FUNCTIONS: Final = ("softmax", "sigmoid", "none")


class _Legacy:
    """Sentinel: top_k not given, the pipeline's legacy output shape."""

    def __repr__(self) -> str:
        return "LEGACY"


LEGACY: Final = _Legacy()
TopK = int | None | _Legacy


def softmax(x: FloatArray) -> FloatArray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    out: FloatArray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)
    return out


SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label", "multi_label", "regression"


def task_of(problem_type: str | None, num_labels: int) -> str:
    """What the model's outputs mean, as transformers' losses read config.problem_type: one
    output without a problem type is a regression head."""
    if problem_type == "regression" or (num_labels == 1 and problem_type is None):
        return REGRESSION
    if problem_type == "multi_label_classification":
        return MULTI_LABEL
    return SINGLE_LABEL


def default_function(problem_type: str | None, num_labels: int) -> str:
    """As the pipeline chooses: none for regression, sigmoid for one label or multi-label."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def resolve_function(name: str | None, problem_type: str | None, num_labels: int) -> str:
    if name is None or name.lower() == "default":
        return default_function(problem_type, num_labels)
    if name.lower() not in FUNCTIONS:
        raise InvalidInput(
            f"function_to_apply must be one of {', '.join(FUNCTIONS)} (or default), got {name!r}"
        )
    return name.lower()


def apply(function: str, logits: FloatArray) -> FloatArray:
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return sigmoid(logits)
    return logits


def check_top_k(top_k: TopK) -> None:
    if isinstance(top_k, _Legacy) or top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidInput(f"top_k must be a positive integer or null, got {top_k!r}")


def format_scores(
    scores: Sequence[float] | FloatArray, id2label: Mapping[int, str], top_k: TopK
) -> dict[str, Any] | list[dict[str, Any]]:
    """One text's answer, exactly as TextClassificationPipeline.postprocess shapes it.

    `scores` as Python floats (a float32 row's `tolist()`): a few labels are ranked faster in
    Python than by numpy calls, which cost most right after a model run has left the caches cold.
    """
    values = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
    if isinstance(top_k, _Legacy):
        best = max(range(len(values)), key=values.__getitem__)  # the first of equals, as argmax
        return {"label": id2label[best], "score": values[best]}
    order = sorted(range(len(values)), key=values.__getitem__, reverse=True)  # stable
    ranked: list[dict[str, Any]] = [{"label": id2label[i], "score": values[i]} for i in order]
    return ranked if top_k is None else ranked[:top_k]


def shape(answers: list[Any], single: bool, wrap: bool = True) -> Any:
    """The pipeline's outer shape: one string gives its answer as a list; a list, one per text;
    one `{text, text_pair}` (wrap=False) its answer as it is."""
    if not single:
        return answers
    first = answers[0]
    return first if isinstance(first, list) or not wrap else [first]

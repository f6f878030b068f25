"""What a text input may be: a non-empty string, or a {text, text_pair} pair of them. The
errors name the input and what is wrong with it (the API's 422s, batch lines' errors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from handler.errors import InvalidInput
from handler.inference.tokenizer import TextInput


def text_problem(text: object) -> str | None:
    """Why `text` (or a pair's member) cannot be classified, or None. Empty text is an error,
    not a guess."""
    if isinstance(text, tuple) and len(text) == 2:
        for name, member in zip(("text", "text_pair"), text, strict=True):
            problem = text_problem(member)
            if problem is not None:
                return f"{name} {problem}"
        return None
    if not isinstance(text, str):
        return f"is {'null' if text is None else type(text).__name__}, expected a string"
    if not text.strip():
        return "is empty or whitespace only"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON "\ud800" escape
        return "is not valid Unicode (lone surrogate)"
    return None


PAIR_KEYS = ("text", "text_pair")


def pair_of(item: Mapping[str, object], index: int) -> object:
    """The pipeline's `{"text": ..., "text_pair": ...}` as an input: a pair, or (without
    `text_pair`) a text; any other key is refused by name, as the tokenizer would not take it."""
    unknown = sorted(str(k) for k in item if k not in PAIR_KEYS)
    if unknown or "text" not in item:
        raise InvalidInput(
            f'input {index} must be {{"text": ..., "text_pair": ...}}: '
            + (f"unknown keys {unknown}" if unknown else "no 'text'")
        )
    if item.get("text_pair") is None:
        return item["text"]
    return (item["text"], item["text_pair"])


def check_texts(texts: Sequence[object]) -> list[TextInput]:
    """Every input must be a non-empty string (or a pair of them); the error names the first
    one that is not."""
    out: list[TextInput] = []
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise InvalidInput(f"input {i} {problem}")
        out.append(text)  # type: ignore[arg-type]
    return out

"""The one reader of the text files a user hands the tools: labelled text (`text<TAB>target`, or
pairs) for the build's gate and `eval`, and unlabelled text (one per line, or pairs) for agreement
and `tune`. Each bad line is an error that names the file, the line and what was expected."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.errors import InvalidInput
from handler.inference.postprocess import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from handler.inference.tokenizer import TextInput


@dataclass(frozen=True)
class Labelled:
    """Texts and their targets: a label id (single-label), a list of label ids (multi-label) or
    a number (regression)."""

    texts: list[TextInput]
    labels: list[Any]


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


def _target(raw: str, id2label: Mapping[int, str], task: str) -> Any:
    """The target in `raw` for this task, or None when it is not one."""
    if task == REGRESSION:
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if np.isfinite(value) else None
    if task == MULTI_LABEL:
        parts = [p for p in re.split(r"[,;|]", raw) if p.strip()]
        ids = [_label_id(p, id2label) for p in parts]
        if any(i is None for i in ids):
            return None
        return sorted(set(ids))  # may be empty: a text with none of the labels
    return _label_id(raw, id2label)


EXPECTED = {
    SINGLE_LABEL: "a label id or name",
    MULTI_LABEL: "label ids or names separated by ',' (or nothing, for none)",
    REGRESSION: "a number",
}


def read_labelled(path: Path, id2label: Mapping[int, str], task: str = SINGLE_LABEL) -> Labelled:
    """Read `text<TAB>target` lines: a label id or name (single-label), several separated by
    commas (multi-label) or a number (regression). A first line whose target is none of these
    is a header; any later one is an error naming its line. A header of three columns
    (`text<TAB>text_pair<TAB>label`, or GLUE's `sentence1<TAB>sentence2<TAB>label`) makes it
    a file of text pairs: every line then holds a text, its pair and the target."""
    texts: list[TextInput] = []
    labels: list[Any] = []
    pairs = False
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, sep, raw = line.rpartition("\t")
            label = _target(raw, id2label, task) if sep else None
            if label is None:
                if lineno == 1:
                    pairs = line.count("\t") == 2
                    continue
                raise InvalidInput(
                    f"{path}:{lineno}: expected '{'text<TAB>text_pair' if pairs else 'text'}"
                    f"<TAB>target' with {EXPECTED[task]} (labels {sorted(id2label)} or "
                    f"{sorted(id2label.values())}), got {raw!r}"
                )
            if pairs:
                first, tab, second = text.partition("\t")
                if not tab or "\t" in second:
                    raise InvalidInput(
                        f"{path}:{lineno}: a file of pairs (its header has three columns) needs "
                        "'text<TAB>text_pair<TAB>target' on every line"
                    )
                texts.append((first.strip(), second.strip()))
            else:
                texts.append(text.strip())
            labels.append(label)
    if not texts:
        raise InvalidInput(f"{path} holds no labelled lines")
    return Labelled(texts, labels)


PAIR_HEADER = "text\ttext_pair"


def read_texts(path: Path) -> list[TextInput]:
    """Unlabelled text, one per line (UTF-8); blank lines are skipped. For the build's agreement
    check (`--agreement-text`) and `tune --data`. A first line `text<TAB>text_pair` makes it a
    file of pairs, one `text<TAB>text_pair` per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    texts: list[TextInput]
    if lines and lines[0].strip().lower() == PAIR_HEADER:
        texts = []
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            first, tab, second = line.partition("\t")
            if not tab or "\t" in second:
                raise InvalidInput(f"{path}:{lineno}: expected 'text<TAB>text_pair'")
            texts.append((first.strip(), second.strip()))
    else:
        texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise InvalidInput(f"{path} holds no text lines")
    return texts

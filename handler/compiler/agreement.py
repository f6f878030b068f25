"""The gate on unlabelled text unlike the labelled set: how closely int8 follows fp32 where the
model is unsure (agreement, label flips by fp32's confidence, score-difference percentiles).

Labelled benchmark text (SST-2) is mostly confident: its figures cannot tell recipes apart. A
public endpoint gets other text, much of it neutral, where fp32's scores sit near the boundary
and int8 rounding moves them most. Without `--agreement-text FILE` the build uses a default set
it makes itself, license-clean and the same on every machine with the same Python: the first
lines of the docstrings in the Python standard library's top-level modules (PSF licence), read
with `ast` (nothing is imported).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.inference.postprocess import SINGLE_LABEL

DEFAULT_COUNT = 1500
MIN_CHARS, MAX_CHARS = 24, 200
# fp32 top-score bands the flips are counted in (a binary head's top score is >= 0.5).
BANDS = (0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class AgreementGate:
    """Thresholds on unlabelled text; None reports the figure without gating on it."""

    min_agreement: float | None = None
    max_p99_score_diff: float | None = None


def _first_line(doc: str | None) -> str | None:
    if not doc:
        return None
    line = " ".join(doc.strip().split("\n\n")[0].split())
    if not MIN_CHARS <= len(line) <= MAX_CHARS or not any(c.isalpha() for c in line):
        return None
    return line


def default_texts(count: int = DEFAULT_COUNT, stdlib: Path | None = None) -> tuple[list[str], str]:
    """(texts, where they came from): `count` docstring first lines of the standard library,
    chosen by a hash of each line (so the same set wherever the same Python is installed)."""
    return _ranked(stdlib)[:count], _where(stdlib)


CALIBRATION_COUNT = 4000


@functools.cache
def calibration_texts(
    count: int = CALIBRATION_COUNT, stdlib: Path | None = None
) -> tuple[list[str], str]:
    """(texts, where they came from): `count` docstring first lines that are not in
    `default_texts()`, so what the quantiser calibrates on is never what the gate reports on:
    the rest of the top-level modules' lines, then lines of the standard library's packages
    (tests left out), file by file in an order fixed by a hash of each file's path, until
    `count` (parsing stops there: a few seconds)."""
    root = (stdlib or Path(sysconfig.get_paths()["stdlib"])).resolve()
    report = set(_ranked(stdlib)[:DEFAULT_COUNT])
    chosen = [t for t in _ranked(stdlib) if t not in report][:count]
    seen = set(chosen) | report
    files = [
        p
        for p in root.glob("*/**/*.py")
        if not {"test", "tests", "idlelib", "site-packages"} & set(p.relative_to(root).parts)
    ]
    files.sort(key=lambda p: hashlib.sha256(str(p.relative_to(root)).encode()).digest())
    for path in files:
        if len(chosen) >= count:
            break
        for line in sorted(_lines_of(path)):
            if line not in seen:
                seen.add(line)
                chosen.append(line)
    return chosen[:count], _where(stdlib) + " (not the gate's)"


def _ranked(stdlib: Path | None) -> list[str]:
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        _docstring_lines(root.resolve()), key=lambda t: hashlib.sha256(t.encode()).digest()
    )


def _where(stdlib: Path | None) -> str:
    where = (
        f"python {sysconfig.get_python_version()} standard library" if stdlib is None else stdlib
    )
    return f"{where} docstrings, first lines"


@functools.cache
def _docstring_lines(root: Path) -> frozenset[str]:
    seen: set[str] = set()
    for path in sorted(root.glob("*.py")):  # top-level modules: enough text, parsed in ~1 s
        seen |= _lines_of(path)
    return frozenset(seen)


def _lines_of(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return set()
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            line = _first_line(ast.get_docstring(node))
            if line:
                lines.add(line)
    return lines


def band_name(i: int) -> str:
    lo = "" if i == 0 else f"{BANDS[i - 1]}"
    hi = "" if i == len(BANDS) else f"{BANDS[i]}"
    return f"<{hi}" if not lo else (f">={lo}" if not hi else f"{lo}-{hi}")


def measure(ref: np.ndarray[Any, Any], cand: np.ndarray[Any, Any], task: str) -> dict[str, Any]:
    """fp32 (ref) against int8 (cand) scores, [texts, labels] each."""
    per_text = np.abs(ref.astype(np.float64) - cand.astype(np.float64)).max(axis=1)
    p50, p99 = np.percentile(per_text, [50, 99]) if per_text.size else (0.0, 0.0)
    out: dict[str, Any] = {
        "n": int(ref.shape[0]),
        "score_diff": {
            "p50": round(float(p50), 5),
            "p99": round(float(p99), 5),
            "max": round(float(per_text.max()) if per_text.size else 0.0, 5),
        },
    }
    if task != SINGLE_LABEL:
        return out
    flipped = ref.argmax(1) != cand.argmax(1)
    band = np.searchsorted(np.asarray(BANDS), ref.max(axis=1), side="right")
    out["agreement"] = round(float(1.0 - flipped.mean()), 4) if flipped.size else 1.0
    out["flips"] = int(flipped.sum())
    out["flips_by_fp32_top_score"] = {
        band_name(i): {"texts": int((band == i).sum()), "flips": int(flipped[band == i].sum())}
        for i in range(len(BANDS) + 1)
    }
    return out


def failures(figures: dict[str, Any], gate: AgreementGate) -> list[str]:
    failed = []
    agreement = figures.get("agreement")
    low = gate.min_agreement
    if low is not None and agreement is not None and agreement < low:
        failed.append("unlabelled_agreement")
    high = gate.max_p99_score_diff
    if high is not None and figures["score_diff"]["p99"] > high:
        failed.append("unlabelled_score_diff_p99")
    return failed


def explain(figures: dict[str, Any], gate: AgreementGate) -> dict[str, str]:
    return {
        "unlabelled_agreement": f"agreement on unlabelled text {figures.get('agreement')} < "
        f"{gate.min_agreement}",
        "unlabelled_score_diff_p99": "score difference p99 on unlabelled text "
        f"{figures['score_diff']['p99']} > {gate.max_p99_score_diff}",
    }

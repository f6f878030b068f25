"""Agreement with fp32 on unlabelled text: the figures, the thresholds, the default text set,
and where the gate's figures were computed."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.compiler import agreement, on_target, targets
from handler.compiler.pipeline import BuildOptions, build
from handler.datafiles import read_texts
from handler.errors import GateFailed, InvalidInput
from handler.inference.postprocess import REGRESSION, SINGLE_LABEL
from tests import tiny


def _pairs(rows: list[tuple[float, float]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return np.asarray([[1.0 - p, p] for p, _ in rows]), np.asarray([[1.0 - q, q] for _, q in rows])


def test_flips_are_counted_by_fp32_confidence_and_differences_by_percentile() -> None:
    # (fp32 P(label 1), int8 P(label 1)): two flips, both where fp32 was unsure.
    ref, cand = _pairs([(0.55, 0.45), (0.52, 0.51), (0.35, 0.62), (0.95, 0.94), (0.99, 0.99)])
    got = agreement.measure(ref, cand, SINGLE_LABEL)
    assert got["n"] == 5 and got["flips"] == 2 and got["agreement"] == 0.6
    bands = got["flips_by_fp32_top_score"]
    assert bands["<0.6"] == {"texts": 2, "flips": 1}
    assert bands["0.6-0.7"] == {"texts": 1, "flips": 1}
    assert bands[">=0.9"] == {"texts": 2, "flips": 0}
    assert sum(b["texts"] for b in bands.values()) == 5
    diffs = np.array([0.10, 0.01, 0.27, 0.01, 0.0])
    assert got["score_diff"]["max"] == pytest.approx(0.27)
    assert got["score_diff"]["p50"] == pytest.approx(float(np.median(diffs)))
    assert got["score_diff"]["p99"] == pytest.approx(float(np.percentile(diffs, 99)), abs=1e-5)


def test_a_regression_head_gets_differences_only() -> None:
    got = agreement.measure(np.array([[1.0], [2.0]]), np.array([[1.5], [2.0]]), REGRESSION)
    assert "agreement" not in got and got["score_diff"]["max"] == 0.5


def test_thresholds_fail_only_when_set_and_crossed() -> None:
    figures = {"agreement": 0.98, "score_diff": {"p50": 0.01, "p99": 0.06, "max": 0.2}}
    assert agreement.failures(figures, agreement.AgreementGate()) == []
    loose = agreement.AgreementGate(min_agreement=0.97, max_p99_score_diff=0.1)
    assert agreement.failures(figures, loose) == []
    strict = agreement.AgreementGate(min_agreement=0.99, max_p99_score_diff=0.05)
    assert agreement.failures(figures, strict) == [
        "unlabelled_agreement",
        "unlabelled_score_diff_p99",
    ]


def test_default_texts_are_docstring_lines_chosen_independently_of_file_order(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "a.py").write_text(
        '"""Parse the configuration file and return its sections."""\n'
        "def f():\n    '''Open a connection to the mail server, retrying on failure.\n\n"
        "    More text.'''\n"
        "def g():\n    '''Short.'''\n"
    )
    (lib / "b.py").write_text('"""Compute the checksum of a block of bytes."""\n')
    (lib / "broken.py").write_text("def (:\n")
    texts, source = agreement.default_texts(stdlib=lib)
    assert sorted(texts) == [
        "Compute the checksum of a block of bytes.",
        "Open a connection to the mail server, retrying on failure.",
        "Parse the configuration file and return its sections.",
    ]
    assert "docstrings" in source
    assert agreement.default_texts(count=2, stdlib=lib)[0] == texts[:2]


def test_the_real_default_set_is_large_and_stable() -> None:
    first, _ = agreement.default_texts()
    assert len(first) == agreement.DEFAULT_COUNT and len(set(first)) == len(first)
    assert first == agreement.default_texts()[0]


def test_agreement_text_is_read_one_per_line_and_bad_files_are_named(tmp_path: Path) -> None:
    good = tmp_path / "t.txt"
    good.write_text("first text\n\n  second  \n")
    assert read_texts(good) == ["first text", "second"]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"latin1\.txt: not UTF-8"):
        read_texts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(InvalidInput, match="no text lines"):
        read_texts(empty)


def test_a_build_reports_unlabelled_figures_and_fails_on_its_threshold(tmp_path: Path) -> None:
    hub = tiny.make_hub_folder(tmp_path / "hub")
    eval_tsv = tiny.write_eval(tmp_path / "eval.tsv", None)
    text = tmp_path / "ood.txt"
    text.write_text("".join(f"the printer setting number {i} opens a page\n" for i in range(40)))
    manifest = build(
        BuildOptions(model=str(hub), out=tmp_path / "ok", eval_path=eval_tsv, agreement_text=text)
    )
    figures = manifest["verification"]["unlabelled"]
    assert figures["n"] == 40 and figures["source"] == str(text)
    assert 0.0 <= figures["agreement"] <= 1.0 and figures["gate"]["min_agreement"] is None
    where = manifest["verification"]["computed_on"]
    assert where["describes_target"] is True and where["host"]["cpu"]
    with pytest.raises(GateFailed, match="agreement on unlabelled text"):
        build(
            BuildOptions(
                model=str(hub),
                out=tmp_path / "refused",
                eval_path=eval_tsv,
                agreement_text=text,
                agreement_gate=agreement.AgreementGate(min_agreement=1.01),
            )
        )
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize(
    ("target", "machine", "quant", "arithmetic", "describes"),
    [
        ("arm64", "x86_64", {}, "build host (x86-64), not the target's", False),
        ("arm64", "aarch64", {}, "native, on the build host", True),
        ("x86-vnni", "x86_64", {"evaluated_as": "twin"}, "exact twin", True),
        ("x86-avx2", "x86_64", {}, "native, on the build host", True),
    ],
)
def test_the_manifest_says_where_the_figures_come_from(
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    machine: str,
    quant: dict[str, str],
    arithmetic: str,
    describes: bool,
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    got = on_target.computed_on(targets.get_target(target), quant, saturates=True)
    assert got["arithmetic"].startswith(arithmetic) and got["describes_target"] is describes
    assert got["host"]["u8s8_saturates"] is True and got["note"]

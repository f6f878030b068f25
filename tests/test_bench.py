"""The benchmarks stay runnable: each script starts, none imports the test suite, and the HTTP
and S3 measurements run end to end on the tiny model (their figures are not asserted: timings
are read as ratios from the scripts, never checked in a test)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_benchmark_imports_the_test_suite(script: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "tests" not in imported
    assert "tests/" not in script.read_text()  # nor reads its files


@pytest.mark.parametrize(
    "script",
    [p for p in SCRIPTS if p.name not in ("common.py", "cold_probe.py")],
    ids=lambda p: p.name,
)
def test_each_benchmark_starts(script: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_the_api_benchmark_runs(tiny_model: Path) -> None:
    from bench import api

    result = api.measure(str(tiny_model), quick=True)
    assert result["lambda_handler_p50_ms"] > 0 and result["predict_p50_ms"] > 0
    assert "| ratio |" in api.render({"tiny": result})


def test_the_cold_start_probe_answers(tiny_model: Path) -> None:
    import json

    from bench.common import SHORT, http_event

    spec = {"int8": str(tiny_model), "text": SHORT, "event": json.dumps(http_event(SHORT))}
    for kind in ("classifier", "function"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "cold_probe.py"), kind, json.dumps(spec)],
            capture_output=True,
            text=True,
            env={"MODEL_DIR": str(tiny_model), "PATH": "", "POWERTOOLS_LOG_LEVEL": "WARNING"},
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines()[-1].startswith("RESULT ")


def test_no_benchmark_shadows_the_standard_library() -> None:
    """`python bench/X.py` puts bench/ first on sys.path: a bench/http.py would hide `http`."""
    assert not {p.stem for p in SCRIPTS} & set(sys.stdlib_module_names)


def test_the_peer_benchmark_runs_a_contender_and_the_gemm_floor(tiny_model: Path) -> None:
    from bench import peers

    host = peers.cpu()
    assert host["model"] and isinstance(host["avx2"], bool)
    assert peers.ort_kernels(host).startswith("MLAS")
    texts = ["a good film", "bad", "the plot was fine and the acting great"]
    spec = {"kind": "project:x86-vnni", "src": "", "artifact": str(tiny_model), "texts": texts}
    worker = peers.Worker(Path(sys.executable), spec)
    try:
        assert worker.cold_s > 0 and worker.kernels.startswith("MLAS")
        assert worker.ask(cmd="one", reps=3) > 0
        assert worker.ask(cmd="many", batch=0) > 0 and worker.ask(cmd="many", batch=2) > 0
        assert worker.ask(cmd="rss") > 10
    finally:
        worker.close()
    assert worker.proc.returncode == 0
    floor = peers.gemm_floor(tiny_model)
    assert 0 < floor < 1.0

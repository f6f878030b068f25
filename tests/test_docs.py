"""The command blocks of README.md and docs/ run as written: every ```bash block of a file, in
order, in one shell (as a user pastes them into one terminal), nothing else set, in a copy of
the repository's layout (./build/model: the tiny model; tests/events; ../shared/data).

Blocks that cannot run here are fenced ```sh and say why on their first line (`# needs: an AWS
account`, ...); synopses with optional flags in brackets are ```text. The README's first block
(the two set-up commands: the demo and this very suite) is run by CI itself, not here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", flags=re.S | re.M)


def blocks(doc: Path, language: str) -> list[str]:
    found = [body for lang, body in FENCE.findall(doc.read_text()) if lang == language]
    return found[1:] if doc.name == "README.md" and language == "bash" else found


def run_blocks(doc: Path, tiny_model: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model, repo / "build" / "model")
    shutil.copytree(ROOT / "tests" / "events", repo / "tests" / "events")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    tiny.write_eval(tmp_path / "shared" / "data" / "sst2-validation-b.tsv")
    # `source .venv/bin/activate`: this interpreter's environment stands in for the demo's.
    bin_dir = Path(sys.executable).parent
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "MODEL_DIR", "OUTPUT_", "INPUT_", "API_BASE"))
    }
    env["PYTHONPATH"] = str(ROOT)
    script = "set -eo pipefail\n" + "\n".join(blocks(doc, "bash"))
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: nothing it started outlives the test
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.returncode == 0, f"{doc.name}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "Traceback" not in stdout
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_shell_block_runs_here_or_says_what_it_needs(doc: Path) -> None:
    for body in blocks(doc, "sh"):
        first = body.lstrip()
        assert first.startswith("# needs: "), (
            f"{doc.name}: an sh block that does not say why:\n{body}"
        )


def test_the_readme_stays_short_and_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for doc in DOCS[1:]:
        assert f"docs/{doc.name}" in readme, f"README does not link docs/{doc.name}"


def test_links_between_docs_point_at_files_that_exist() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+?\.md)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).is_file(), f"{doc.name} links {target}"


def test_usage_has_the_commands_users_need() -> None:
    joined = "\n".join(blocks(ROOT / "docs" / "usage.md", "bash"))
    commands = ("classify", "eval", "verify", "invoke", "tune", "serve --port 8000")
    for command in commands:
        assert f"python -m handler {command}" in joined
    assert "--current-etag" in joined
    assert "API=http://127.0.0.1:8000" in joined


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the commands use curl")
def test_usage_commands_run_as_written(tiny_model: Path, tmp_path: Path) -> None:
    out = run_blocks(ROOT / "docs" / "usage.md", tiny_model, tmp_path)
    assert '"status": "done"' in out.stdout and '"record": 2' in out.stdout  # --current-etag
    assert "TextClassificationOutputElement(label=" in out.stdout  # InferenceClient
    assert "| 1769 | 1.00 |" in out.stdout and "batch: " in out.stdout  # tune's table
    assert '"localFailureReasons"' in out.stdout and '"statusCode": 200' in out.stdout


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if d.name != "usage.md" and blocks(d, "bash")],
    ids=lambda p: p.name,
)
def test_the_other_command_blocks_run_as_written(
    doc: Path, tiny_model: Path, tmp_path: Path
) -> None:
    run_blocks(doc, tiny_model, tmp_path)


def test_the_readme_demo_output_says_what_it_shows() -> None:
    """The S3 output block's header, its lines and the prose above it agree (the prose once
    said one bad record above an output with two)."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r": (\d+) records, (\d+) errors\n(.*?)```", text, flags=re.S)
    assert found, "the demo's S3 output block"
    records, errors = int(found.group(1)), int(found.group(2))
    lines = [ln for ln in found.group(3).splitlines() if ln.startswith("{")]
    assert len(lines) == records
    assert sum('"error"' in ln for ln in lines) == errors
    words = {1: "one bad record", 2: "two bad records", 3: "three bad records"}
    assert words[errors] in " ".join(text[: found.start()].split())

"""The README's "After the demo" commands, run as written (bash, in order, nothing else set) in a
copy of the repository's layout: ./build/model (the tiny model), tests/events, ../shared/data."""

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
SECTION = "## After the demo"


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", text[start:end], flags=re.S)


def test_the_section_has_the_commands_users_need() -> None:
    joined = "\n".join(readme_blocks())
    commands = ("classify", "eval", "verify", "invoke", "tune", "serve --port 8000")
    for command in commands:
        assert f"python -m handler {command}" in joined
    assert "--current-etag" in joined
    assert "API=http://127.0.0.1:8000" in joined


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
def test_after_the_demo_commands_run_as_written(tiny_model: Path, tmp_path: Path) -> None:
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
    # One shell, as a user pastes the blocks one after another into one terminal.
    script = "set -eo pipefail\n" + "\n".join(readme_blocks())
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
    assert proc.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert "Traceback" not in out.stdout
    assert '"status": "done"' in out.stdout and '"record": 2' in out.stdout  # --current-etag
    assert "TextClassificationOutputElement(label=" in out.stdout  # InferenceClient
    assert "| 1769 | 1.00 |" in out.stdout and "batch: " in out.stdout  # tune's table
    assert '"localFailureReasons"' in out.stdout and '"statusCode": 200' in out.stdout

"""Everyday typos, as a new user makes them: one line that says what is wrong, exit status 2,
never a traceback (the CLI's --help promises `error: ...` and 2)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handler import cli
from handler.config import get_settings
from handler.loading import get_model

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings and the model are cached per process, as in Lambda; each test sets its own."""
    get_settings.cache_clear()
    get_model.cache_clear()
    yield
    get_settings.cache_clear()
    get_model.cache_clear()


def _fail(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in this process; its exit status must be 2 and stderr an error, no trace."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["build", "--target", "avx512"], "unknown target 'avx512': choose one of x86-avx2"),
        (["build", "--fidelity", "max"], "invalid choice: 'max'"),
        (["build", "--eval", "nope.tsv"], "--eval: no such file: nope.tsv"),
        (["build", "--agreement-text", "."], "--agreement-text: a folder, not a file"),
        (["invoke", "--event", "nope.json"], "--event: no such file: nope.json"),
        (["eval", "--data", "nope.tsv"], "--data: no such file: nope.tsv"),
        (["tune", "--data", "nope.txt"], "--data: no such file: nope.txt"),
        (["classify", "--threads", "0", "x"], "--threads: a whole number of 1 or more"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_a_typo_is_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _fail(argv, capsys)
    assert says in line
    assert line.endswith("--help)"), "the line says where to read more"


def _fail_in_a_process(argv: list[str], model_dir: Path) -> str:
    """As _fail, in a fresh process: `invoke` loads the function once per process, as Lambda
    loads it once per execution environment."""
    out = subprocess.run(
        [sys.executable, "-m", "handler", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MODEL_DIR": str(model_dir)},
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_an_event_that_is_not_json_says_so(tiny_model: Path) -> None:
    line = _fail_in_a_process(["invoke", "--event", str(README)], tiny_model)
    assert "is not a JSON event" in line and "tests/events/" in line


def test_a_data_file_that_is_not_text_says_so(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    line = _fail(["eval", "--model", str(tiny_model), "--data", str(binary)], capsys)
    assert str(binary) in line or "UTF-8" in line


def test_a_model_folder_hint_names_only_options_the_command_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = Path(__file__).resolve().parent / "events" / "apigw-http-classify.json"
    line = _fail_in_a_process(["invoke", "--event", str(event)], tmp_path / "nothing")
    assert "point MODEL_DIR at a built model folder" in line and "(or --model)" not in line
    line = _fail(["classify", "--model", str(tmp_path / "nothing"), "x"], capsys)
    assert "point MODEL_DIR (or --model)" in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_classify_on_a_terminal_without_text_shows_usage(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal())
    line = _fail(["classify", "--model", str(tiny_model)], capsys)
    assert "no TEXT given" in line


def test_classify_reads_piped_lines(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("great fun\n\nawful plot\n"))
    assert cli.main(["classify", "--model", str(tiny_model)]) == 0
    assert capsys.readouterr().out.count('"label"') == 2


@pytest.mark.parametrize("command", ["build", "serve", "tune", "invoke", "classify"])
def test_help_shows_defaults_and_every_option_has_help(command: str) -> None:
    commands = cli.parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    sub = commands[command]  # type: ignore[index]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    text = " ".join(sub.format_help().split())
    if command == "build":
        assert "(default: x86-avx2)" in text and "(default: build/model)" in text
    if command == "serve":
        assert "(default: 127.0.0.1)" in text and "(default: 8000)" in text
    if command == "tune":
        assert "(default: 512,1024" in text

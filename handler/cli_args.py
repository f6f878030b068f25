"""The CLI's argument types and parser: a typo is a one-line usage error (exit status 2), never a
traceback, and --help shows every default."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def existing_file(value: str) -> Path:
    """argparse type: a file that exists (a typo is a usage error, not a traceback)."""
    path = Path(value)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{what}: {value}")
    return path


def target_name(value: str) -> str:
    """argparse type: a build target's name (or alias), as handler/compiler/targets.py has it."""
    from handler.compiler.targets import get_target

    try:
        return get_target(value).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a whole number of 1 or more, got {value!r}")
    return number


class Shown(argparse.HelpFormatter):
    """Help that shows each option's default, where it has one and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Usage errors in one line: what is wrong, and where to read more; exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

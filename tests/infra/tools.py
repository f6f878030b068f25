"""Where the SAM CLI and the scanners are: $TOOLS_BIN (scripts/test.sh sets it to .venv-tools/bin,
which scripts/setup.sh fills from scripts/tools-requirements.txt), else PATH."""

from __future__ import annotations

import os
import shutil

import pytest


def tool(name: str) -> str:
    """The executable's path; skips the test, naming the tool and how to get it, without it."""
    where = os.environ.get("TOOLS_BIN")
    found = shutil.which(name, path=where) if where else None
    found = found or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found (scripts/setup.sh installs it into .venv-tools; TOOLS_BIN)")
    return found

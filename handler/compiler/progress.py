"""Progress of a build on stderr (tqdm), shown only when the user is watching a terminal.

Quiet when stdout or stderr is not a terminal (CI logs, `build ... > result.json`), and with
PROGRESS=0; PROGRESS=1 forces it on. stdout stays the command's result either way.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm


def enabled() -> bool:
    forced = os.environ.get("PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    streams = (sys.__stdout__, sys.__stderr__)
    return all(s is not None and s.isatty() for s in streams)


def bar(total: int, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar on stderr, or a silent one (same methods) when progress is off."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.__stderr__,
        disable=not enabled(),
        dynamic_ncols=True,
    )

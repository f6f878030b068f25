"""The tuner's answer as deploy parameters: `sam deploy --parameter-overrides` text, and the same
entries written into a samconfig.toml, so that a team deploys what it measured.

The template's parameters it sets: ApiMemorySize (the cheapest size whose one-text p99 meets the
target), BatchMemorySize (the cheapest per text through S3), MaxRequestTokens (what the API size
reads in the request time, measured), Architecture (the measured CPU's). Other entries of an
existing samconfig.toml, and other parameter overrides in it, are kept.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

SAMCONFIG_VERSION = 0.1


def overrides(result: dict[str, Any]) -> dict[str, str]:
    """Template parameter -> value, from a `tune` result (only what it measured)."""
    rec = result["recommendation"]
    out: dict[str, str] = {"Architecture": str(result["arch"])}
    if rec.get("api"):
        out["ApiMemorySize"] = str(rec["api"])
        row = next((s for s in result["sizes"] if s["memory_mb"] == rec["api"]), None)
        if row is not None and row.get("max_request_tokens"):
            out["MaxRequestTokens"] = str(row["max_request_tokens"])
    if rec.get("batch"):
        out["BatchMemorySize"] = str(rec["batch"])
    return out


def as_argument(values: dict[str, str]) -> str:
    """The value of `sam deploy --parameter-overrides` (Key=Value pairs, shell-quoted)."""
    return " ".join(shlex.quote(f"{k}={v}") for k, v in values.items())


def _parse_overrides(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(text) if "=" in pair)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_value(name)


def _dump(doc: dict[str, Any]) -> str:
    """samconfig.toml's shape: top-level scalars, then [env.command.parameters] tables."""
    lines = [f"{_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]

    def tables(prefix: list[str], table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if scalars and prefix:
            lines.extend(["", "[" + ".".join(_key(p) for p in prefix) + "]"])
            lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in table.items():
            if isinstance(v, dict):
                tables([*prefix, k], v)

    tables([], doc)
    return "\n".join(lines) + "\n"


def write(path: Path, values: dict[str, str], env: str = "default") -> dict[str, str]:
    """Merge `values` into `path`'s [env.deploy.parameters] parameter_overrides (the file is
    made when missing); returns the overrides now in the file."""
    doc: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}
    doc.setdefault("version", SAMCONFIG_VERSION)
    params = doc.setdefault(env, {}).setdefault("deploy", {}).setdefault("parameters", {})
    merged = {**_parse_overrides(str(params.get("parameter_overrides", ""))), **values}
    params["parameter_overrides"] = as_argument(merged)
    path.write_text(_dump(doc))
    return merged

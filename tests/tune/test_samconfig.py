"""The tuner's answer as deploy parameters: `--parameter-overrides` text and samconfig.toml
entries that the SAM CLI itself reads back, merged into a file a team already has."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from handler.tune import samconfig

RESULT: dict[str, Any] = {
    "arch": "x86_64",
    "recommendation": {"api": 1769, "batch": 3538},
    "sizes": [
        {"memory_mb": 1024, "max_request_tokens": 5000},
        {"memory_mb": 1769, "max_request_tokens": 9150},
        {"memory_mb": 3538, "max_request_tokens": 17000},
    ],
}


def test_the_recommendation_becomes_template_parameters() -> None:
    values = samconfig.overrides(RESULT)
    assert values == {
        "Architecture": "x86_64",
        "ApiMemorySize": "1769",
        "MaxRequestTokens": "9150",  # the API size's own measured budget
        "BatchMemorySize": "3538",
    }
    template = (Path(__file__).resolve().parents[2] / "infra" / "template.yaml").read_text()
    for name in values:
        assert f"\n  {name}:\n" in template, f"{name} is not a parameter of the template"
    pairs = dict(p.split("=", 1) for p in shlex.split(samconfig.as_argument(values)))
    assert pairs == values


def test_nothing_measured_is_nothing_written() -> None:
    none = {"arch": "arm64", "recommendation": {"api": None, "batch": None}, "sizes": []}
    assert samconfig.overrides(none) == {"Architecture": "arm64"}


def test_writing_keeps_what_the_file_already_says(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(
        'version = 0.1\n\n[default.deploy.parameters]\nstack_name = "reviews"\n'
        'capabilities = "CAPABILITY_IAM"\nparameter_overrides = "AlarmEmail=ops@example.com '
        'ApiMemorySize=512"\n\n[prod.deploy.parameters]\nstack_name = "reviews-prod"\n'
    )
    merged = samconfig.write(path, samconfig.overrides(RESULT))
    doc = tomllib.loads(path.read_text())
    params = doc["default"]["deploy"]["parameters"]
    assert params["stack_name"] == "reviews" and params["capabilities"] == "CAPABILITY_IAM"
    assert doc["prod"]["deploy"]["parameters"] == {"stack_name": "reviews-prod"}
    got = dict(p.split("=", 1) for p in shlex.split(params["parameter_overrides"]))
    assert got == merged and got["AlarmEmail"] == "ops@example.com"
    assert got["ApiMemorySize"] == "1769"  # measured, so it replaces the guess


def test_the_sam_cli_reads_the_file_back(tmp_path: Path) -> None:
    tools = os.environ.get("TOOLS_BIN")
    python = Path(tools) / "python" if tools else None
    if python is None or not python.is_file():
        pytest.skip("the SAM CLI's environment not found (TOOLS_BIN; scripts/setup.sh makes it)")
    samconfig.write(tmp_path / "samconfig.toml", samconfig.overrides(RESULT), env="staging")
    script = (
        "import json, sys; from samcli.lib.config.samconfig import SamConfig;"
        "c = SamConfig(sys.argv[1]);"
        "print(json.dumps(c.get_all(['deploy'], 'parameters', env='staging')))"
    )
    out = subprocess.run(
        [str(python), "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    read = json.loads(out.stdout)
    pairs = dict(p.split("=", 1) for p in shlex.split(read["parameter_overrides"]))
    assert pairs["ApiMemorySize"] == "1769" and pairs["BatchMemorySize"] == "3538"


def test_the_cli_writes_it(tmp_path: Path, tiny_model: Path) -> None:
    import sys

    path = tmp_path / "samconfig.toml"
    args = [
        "tune",
        "--model",
        str(tiny_model),
        "--sizes",
        "1769",
        "--rounds",
        "1",
        "--p99-ms",
        "1e6",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "handler", *args, "--samconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "sam deploy --parameter-overrides" in out.stdout
    params = tomllib.loads(path.read_text())["default"]["deploy"]["parameters"]
    assert "ApiMemorySize=1769" in params["parameter_overrides"]


def test_a_provisioned_environment_costs_its_gb_seconds_for_a_month() -> None:
    from handler import tune

    x86, arm = tune.PRICES["x86_64"], tune.PRICES["arm64"]
    month = 30 * 24 * 3600
    assert tune.provisioned_per_month(1024, x86) == pytest.approx(month * 0.0000041667)
    assert tune.provisioned_per_month(2048, x86) == pytest.approx(2 * month * 0.0000041667)
    assert tune.provisioned_per_month(1024, arm) < tune.provisioned_per_month(1024, x86)

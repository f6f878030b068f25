"""What a security review runs, clean or explained: checkov over both templates (as written and
after the SAM transform) and the Dockerfile, hadolint, actionlint and zizmor over the workflows,
bandit over the code. Every skip carries its reason where the resource is."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import sam
from tests.infra.tools import tool

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [ROOT / "infra" / "template.yaml", ROOT / "infra" / "template-zip.yaml"]
BOOTSTRAP = ROOT / "infra" / "deploy-role.yaml"  # plain CloudFormation: no SAM transform
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _checkov(path: Path, framework: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            *(tool("checkov"), "-f", str(path), "--framework", framework, "-o", "json"),
            *("--skip-download", "--compact"),  # not --quiet: it drops the skipped checks
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout) if out.stdout.strip() else {}
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    reasons = [(c.get("check_result") or {}).get("suppress_comment") or "" for c in skipped]
    assert all(r.strip() for r in reasons), skipped
    assert report and [c for r in reports for c in r["results"]["passed_checks"]]  # it ran checks
    return failed


def _failures(failed: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check_id']} {c.get('resource')}: {c.get('check_name')}" for c in failed]


@pytest.mark.slow
@pytest.mark.parametrize("template", [*TEMPLATES, BOOTSTRAP], ids=lambda p: p.name)
def test_checkov_finds_nothing_unexplained_in_the_template(template: Path) -> None:
    assert _failures(_checkov(template, "cloudformation")) == []


@pytest.mark.slow
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_checkov_finds_nothing_unexplained_after_the_sam_transform(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from samtranslator.yaml_helper import yaml_parse

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = tmp_path / f"{template.stem}.json"
    out.write_text(json.dumps(sam.transform(yaml_parse(template.read_text()))))
    assert _failures(_checkov(out, "cloudformation")) == []


@pytest.mark.parametrize("template", [*TEMPLATES, BOOTSTRAP], ids=lambda p: p.name)
def test_every_checkov_skip_in_a_template_says_why(template: Path) -> None:
    from samtranslator.yaml_helper import yaml_parse

    doc = yaml_parse(template.read_text())
    skips = [
        (name, skip)
        for name, resource in doc["Resources"].items()
        for skip in (resource.get("Metadata") or {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "no skips: this test would pass vacuously"
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", skip["id"]), (name, skip)
        assert len(skip.get("comment", "").split()) >= 8, (name, skip)  # a reason, not a word


@pytest.mark.slow
def test_checkov_and_hadolint_pass_the_dockerfile() -> None:
    dockerfile = ROOT / "infra" / "Dockerfile"
    assert _failures(_checkov(dockerfile, "dockerfile")) == []
    out = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflows_exist_and_pin_every_action_to_a_commit() -> None:
    assert {p.name for p in WORKFLOWS} >= {"test.yml", "deploy.yml"}
    for path in WORKFLOWS:
        uses = re.findall(r"^\s*-?\s*uses:\s*(\S+)", path.read_text(), flags=re.M)
        assert uses, path
        for ref in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}"
        doc = yaml.safe_load(path.read_text())
        assert doc["permissions"] == {}, path.name  # nothing by default; each job asks
        for job in doc["jobs"].values():
            assert "permissions" in job and "write-all" not in str(job["permissions"])


def test_deploy_uses_oidc_not_stored_keys() -> None:
    text = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    doc = yaml.safe_load(text)
    job = doc["jobs"]["deploy"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert "role-to-assume" in text and "aws-access-key-id" not in text
    assert "secrets." not in text  # repository variables only: nothing long-lived
    assert "scripts/smoke.py" in text and "describe-stacks" in text


def test_actionlint_and_zizmor_are_clean() -> None:
    files = [str(p) for p in WORKFLOWS]
    lint = subprocess.run([tool("actionlint"), *files], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    audit = subprocess.run(
        [tool("zizmor"), "--offline", "--min-severity", "medium", "--format", "json", *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert json.loads(audit.stdout) == []


def test_bandit_finds_nothing_of_medium_severity_or_above() -> None:
    out = subprocess.run(
        [tool("bandit"), "-r", "handler", "scripts", "-f", "json", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    report = json.loads(out.stdout)
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really read the code
    serious = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] in ("MEDIUM", "HIGH")
    ]
    assert serious == []

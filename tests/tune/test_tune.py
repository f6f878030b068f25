"""`python -m handler tune`: the CPU quota, the cost arithmetic, the recommendation, and what it
says when cgroups cannot be written or the architecture cannot be timed here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handler import tune
from handler.config import REQUEST_TOKENS_PER_VCPU
from handler.errors import InvalidInput
from handler.tune import quota

X86 = tune.PRICES["x86_64"]


def _m(memory_mb: int, **kw: float) -> tune.Measured:
    figures: dict[str, float] = {
        "threads": 1,
        "init_api_s": 0.6,
        "init_batch_s": 0.3,
        "api_p50_ms": 4.0,
        "api_p99_ms": 12.0,
        "api_billed_ms": 5.0,
        "batch_texts_per_s": 500.0,
        **kw,
    }
    vcpus = quota.lambda_vcpus(memory_mb)
    return tune.Measured(
        memory_mb=memory_mb,
        vcpus=vcpus,
        quota_vcpus=vcpus,
        host_cpus=2,
        threads=int(figures["threads"]),
        init_api_s=figures["init_api_s"],
        init_batch_s=figures["init_batch_s"],
        api_p50_ms=figures["api_p50_ms"],
        api_p99_ms=figures["api_p99_ms"],
        api_billed_ms=figures["api_billed_ms"],
        batch_texts_per_s=figures["batch_texts_per_s"],
        max_length_tokens_per_s=figures.get("max_length_tokens_per_s", 0.0),
    )


def test_costs_per_million_texts_by_hand() -> None:
    m = _m(1024, api_billed_ms=5.0, batch_texts_per_s=500.0)
    # API: 1e6 requests x 1 GB x 0.005 s x 0.0000166667 + $0.20 = 0.0833335 + 0.20
    assert tune.api_cost_per_million(m, X86) == pytest.approx(0.2833335)
    # Batch: 1e6 / 500 = 2,000 s x 1 GB x 0.0000166667 = 0.0333334; 100 requests = $0.00002
    assert tune.batch_cost_per_million(m, X86) == pytest.approx(0.0333334 + 0.00002)
    arm = _m(512, api_billed_ms=10.0)
    # 0.5 GB x 0.010 s x 0.0000133334 x 1e6 = 0.0666670, + 0.20
    assert tune.api_cost_per_million(arm, tune.PRICES["arm64"]) == pytest.approx(0.266667)


def test_the_request_budget_by_hand() -> None:
    """MAX_REQUEST_TOKENS for a size: what its max-length rate reads in the request seconds;
    and the unset budget's worst case there."""
    m = _m(1769, max_length_tokens_per_s=1000.0)
    got = tune.request_budget(m, 10.0)
    assert got["max_request_tokens"] == 10_000
    assert got["default_budget"] == REQUEST_TOKENS_PER_VCPU
    assert got["default_worst_s"] == pytest.approx(REQUEST_TOKENS_PER_VCPU / 1000.0, abs=0.01)
    half = tune.request_budget(_m(885, max_length_tokens_per_s=500.0), 4.0)
    assert half["max_request_tokens"] == 2000
    assert half["default_budget"] == int(REQUEST_TOKENS_PER_VCPU * quota.lambda_vcpus(885))
    old = tune.request_budget(_m(1769), 10.0)  # figures from before the rate was measured
    assert old["max_request_tokens"] is None and old["default_worst_s"] is None
    table = tune.render(tune.report([m, _m(3538)], X86, 100.0, "by hand", True, 10.0))
    assert "| 10000 |" in table and "MAX_REQUEST_TOKENS for 10 s" in table


def test_lambda_vcpus_are_proportional_to_memory() -> None:
    assert quota.lambda_vcpus(1769) == 1.0
    assert quota.lambda_vcpus(512) == pytest.approx(0.2894, abs=1e-4)
    # The largest size buys 5.79 vCPUs of time on 6 cores (rwnx/lambda-cpuinfo measured it).
    assert quota.lambda_vcpus(10240) == pytest.approx(5.7886, abs=1e-4)


def test_recommendation_is_the_cheapest_size_meeting_the_target() -> None:
    rows = [
        _m(512, api_p99_ms=140.0, api_billed_ms=9.0, batch_texts_per_s=150.0),
        _m(1024, api_p99_ms=60.0, api_billed_ms=6.0, batch_texts_per_s=330.0),
        _m(1769, api_p99_ms=12.0, api_billed_ms=5.0, batch_texts_per_s=640.0),
    ]
    rec = tune.recommend(rows, X86, p99_ms=100.0)
    assert rec["api"] == 1024  # 512 misses the target; 1024 is cheaper than 1769
    assert rec["batch"] == 1769  # 1,769 MB / 640 texts/s beats 1,024 / 330 and 512 / 150
    assert tune.recommend(rows, X86, p99_ms=20.0)["api"] == 1769
    none = tune.recommend(rows, X86, p99_ms=5.0)
    assert none["api"] is None and "no measured size meets" in none["api_note"]


def test_sizes_measured_without_a_quota_or_beyond_the_host_are_not_recommended() -> None:
    unquoted = tune.Measured(**{**_m(512).__dict__, "quota_vcpus": None})
    too_big = tune.Measured(**{**_m(5307).__dict__, "host_cpus": 2})
    assert not unquoted.meaningful and not too_big.meaningful
    assert tune.Measured(**{**_m(1769).__dict__, "quota_vcpus": None}).meaningful
    cheap_but_unmeasured = tune.Measured(
        **{**_m(512, api_billed_ms=1.0, batch_texts_per_s=5000.0).__dict__, "quota_vcpus": None}
    )
    rec = tune.recommend([cheap_but_unmeasured, _m(1769)], X86, 100.0)
    assert rec["api"] == 1769 and rec["batch"] == 1769


def test_each_figure_is_the_median_over_rounds() -> None:
    rounds = ((9, 300), (30, 100), (12, 320))
    runs = [_m(1024, api_p99_ms=p, batch_texts_per_s=t) for p, t in rounds]
    got = tune.median_of(runs)
    assert got.api_p99_ms == 12 and got.batch_texts_per_s == 300 and got.memory_mb == 1024


def _busy_share(procs: Path | None, seconds: float = 1.5) -> float:
    code = (
        "import os, time\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end: pass\n"
        "t = os.times(); print(t.user + t.system)\n"
    )
    start = time.monotonic()
    out = subprocess.run(
        [*quota.argv_in(procs), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) / (time.monotonic() - start)


@pytest.mark.parametrize("vcpus", [0.5, 0.25])
def test_the_quota_limits_a_busy_loop_to_the_asked_share(vcpus: float) -> None:
    with quota.quota(f"hf-tune-test-{vcpus}", vcpus) as procs:
        if procs is None:
            pytest.skip("cgroups are not writable here (needs root and a cgroup file system)")
        share = _busy_share(procs)
    assert abs(share - vcpus) <= 0.15 * vcpus, share
    assert not procs.parent.exists()  # the group is removed afterwards


def test_without_cgroups_it_measures_unconstrained_and_says_so(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quota, "make_group", lambda *a, **k: None)
    notes: list[str] = []
    texts = ["the movie was great", "awful boring plot", "😀😀"]  # the last: nothing known
    result = tune.run(tiny_model, texts, [512, 1769], X86, 100.0, progress=notes.append, rounds=1)
    assert "cgroups are not writable" in result["cpu_quota"]
    assert any("without a CPU quota" in n for n in notes)
    small, full = result["sizes"]
    assert small["quota_vcpus"] is None and not small["meaningful"] and "without" in small["note"]
    assert full["meaningful"] and full["threads"] == 1
    assert full["api_p99_ms"] >= full["api_p50_ms"] > 0 and full["batch_texts_per_s"] > 0
    assert result["recommendation"]["batch"] == 1769
    text = tune.render(result)
    assert "(*) 512 MB" in text and "cgroups are not writable" in text


def test_arm64_is_priced_from_figures_measured_there(tmp_path: Path) -> None:
    if tune.host_arch() == "arm64":
        pytest.skip("this host is arm64: it times arm64 itself")
    with pytest.raises(InvalidInput, match="cannot time arm64 on this x86_64 host"):
        tune.run(tmp_path, ["a"], [1024], tune.PRICES["arm64"], 100.0)
    earlier = tune.report([_m(1024), _m(1769)], X86, 100.0, "measured on arm64", True)
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(earlier))
    result = tune.run(tmp_path, [], [], tune.PRICES["arm64"], 100.0, measured_file=path)
    assert result["arch"] == "arm64" and "measured earlier" in result["figures"]
    got = result["sizes"][0]["cost_per_million_api_usd"]
    assert got == pytest.approx(tune.api_cost_per_million(_m(1024), tune.PRICES["arm64"]), 1e-3)
    assert got < earlier["sizes"][0]["cost_per_million_api_usd"]  # arm64's GB-s is cheaper
    path.write_text("{}")
    with pytest.raises(InvalidInput, match="not the JSON output of `tune --json`"):
        tune.run(tmp_path, [], [], tune.PRICES["arm64"], 100.0, measured_file=path)


def test_cli_tune_prints_json_with_every_size(tiny_model: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "handler", "tune", "--model", str(tiny_model)),
            *("--sizes", "1024,1769", "--json", "--p99-ms", "1000", "--rounds", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert [s["memory_mb"] for s in result["sizes"]] == [1024, 1769]
    assert result["recommendation"]["api"] in (1024, 1769)
    assert result["prices"]["as_of"] and "api_p99_ms" in result["measured"]
    for size in result["sizes"]:  # measured: the worst case the request budget is set by
        assert size["max_length_tokens_per_s"] > 0 and size["max_request_tokens"] >= 1
    bad = subprocess.run(
        [sys.executable, "-m", "handler", "tune", "--model", str(tiny_model), "--sizes", "64"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "128-10240 MB" in bad.stderr


def test_windowed_texts_are_priced_when_asked(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tune --long-text windows` runs both probes with the function reading long texts in
    windows (the API's requests ask for it, the batch chunks read it): what such texts cost."""
    monkeypatch.setattr(quota, "make_group", lambda *a, **k: None)
    long = ["good great fun loved best " * 6 + "awful dull worst boring terrible " * 30] * 3
    result = tune.run(tiny_model, long, [1769], X86, 1e6, rounds=1, long_text="windows")
    assert result["figures"].endswith("long_text=windows")
    assert result["sizes"][0]["batch_texts_per_s"] > 0

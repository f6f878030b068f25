"""`python -m handler tune`: which memory size to give the function, and what a million texts
cost there, measured on this machine before deploying.

Lambda sells CPU through memory (1,769 MB buys one vCPU). For each memory size this runs the
real entry point in fresh processes under the CPU share that size buys (a CFS quota on a cgroup,
`quota.py`), on the user's texts: the init as billed, one-text requests through `lambda_handler`
(p50/p99), and batch throughput in the S3 path's chunks. Costs per million texts are computed
from those figures and the published prices (inputs, with their date). The AWS tool for the same
question, Lambda Power Tuning, runs the deployed function at each size; this answers it from the
artifact alone, and its figures are only as close to Lambda's as the quota is to Lambda's CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from handler.config import MB_PER_VCPU, REQUEST_TOKENS_PER_VCPU, default_request_tokens
from handler.errors import InvalidInput
from handler.inference.tokenizer import TextInput
from handler.tune import quota

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (512, 1024, 1769, 3008, 3538)
DEFAULT_P99_MS = 100.0
API_REQUESTS = 200  # one-text requests per size (p99 is then the second-slowest)
BATCH_TEXTS = 512  # texts per size through the S3 path's chunks
TEXTS_PER_OBJECT = 10_000  # batch: one invocation per object of this many texts
DEFAULT_ROUNDS = 3
# The time a request's whole token budget may take at a size (MAX_REQUEST_TOKENS is set by it):
# a third of API Gateway's 29 s, leaving room for a cold start and a slower host.
DEFAULT_REQUEST_SECONDS = 10.0
MEASURED_FIELDS = (
    "threads",
    "init_api_s",
    "init_batch_s",
    "api_p50_ms",
    "api_p99_ms",
    "api_billed_ms",
    "batch_texts_per_s",
    "max_length_tokens_per_s",
)


@dataclass(frozen=True)
class Prices:
    """Lambda's on-demand prices for one architecture (USD)."""

    arch: str
    per_gb_second: float
    per_million_requests: float
    as_of: str
    # Provisioned concurrency: per GB-second an environment is kept initialised (billed whether
    # or not it serves), besides a lower duration price for what it serves.
    provisioned_per_gb_second: float = 0.0
    source: str = (
        "https://aws.amazon.com/lambda/pricing/ (us-east-1, first duration tier; other regions "
        "and tiers differ: pass --price-gb-s and --price-request)"
    )


PRICES = {
    "x86_64": Prices(
        "x86_64", 0.0000166667, 0.20, "2026-11-30", provisioned_per_gb_second=0.0000041667
    ),
    "arm64": Prices(
        "arm64", 0.0000133334, 0.20, "2026-11-30", provisioned_per_gb_second=0.0000033334
    ),
}


@dataclass(frozen=True)
class Measured:
    """What was measured at one memory size."""

    memory_mb: int
    vcpus: float  # the share Lambda gives this size
    quota_vcpus: float | None  # the share the measurement ran under (None: no quota)
    host_cpus: int
    threads: int
    init_api_s: float
    init_batch_s: float
    api_p50_ms: float
    api_p99_ms: float
    api_billed_ms: float  # mean of each request's duration rounded up to 1 ms, as Lambda bills
    batch_texts_per_s: float
    # Texts as long as the model reads, in micro-batches: the request budget's worst case (0.0
    # in figures from before it was measured).
    max_length_tokens_per_s: float = 0.0

    @property
    def meaningful(self) -> bool:
        """Whether the figures stand for this size: its CPU share was applied and this host has
        the CPUs it buys (without a quota, only a size of one vCPU or more, and only as far as
        the host's CPUs go)."""
        if self.vcpus > self.host_cpus:
            return False
        return self.quota_vcpus is not None or self.vcpus >= 1.0


def gb(memory_mb: int) -> float:
    return memory_mb / 1024  # Lambda's GB-seconds count memory in units of 1,024 MB


def api_cost_per_million(m: Measured, prices: Prices) -> float:
    """One text per request: a million requests, each billed its rounded-up duration."""
    duration = gb(m.memory_mb) * m.api_billed_ms / 1000 * prices.per_gb_second
    return 1e6 * duration + prices.per_million_requests


def batch_cost_per_million(
    m: Measured, prices: Prices, texts_per_object: int = TEXTS_PER_OBJECT
) -> float:
    """A million texts through the S3 path, one invocation per object of `texts_per_object`."""
    seconds = 1e6 / m.batch_texts_per_s
    requests = math.ceil(1e6 / texts_per_object)
    return gb(m.memory_mb) * seconds * prices.per_gb_second + requests / 1e6 * (
        prices.per_million_requests
    )


SECONDS_PER_MONTH = 30 * 24 * 3600


def provisioned_per_month(memory_mb: int, prices: Prices) -> float:
    """What one environment of provisioned concurrency at this size costs for a 30-day month,
    kept initialised (ApiProvisionedConcurrency=1), before any request it serves."""
    return gb(memory_mb) * SECONDS_PER_MONTH * prices.provisioned_per_gb_second


def request_budget(m: Measured, request_seconds: float) -> dict[str, Any]:
    """MAX_REQUEST_TOKENS for this size (the tokens its worst case reads in `request_seconds`)
    and how long the default budget's worst case takes here."""
    rate = m.max_length_tokens_per_s
    default = default_request_tokens(m.vcpus)
    if rate <= 0:
        return {"max_request_tokens": None, "default_budget": default, "default_worst_s": None}
    return {
        "max_request_tokens": max(1, int(rate * request_seconds)),
        "default_budget": default,
        "default_worst_s": round(default / rate, 2),
    }


def recommend(rows: list[Measured], prices: Prices, p99_ms: float) -> dict[str, Any]:
    """The cheapest size per API request whose p99 meets the target, and the cheapest per text
    in batch; only sizes whose figures stand for them take part."""
    usable = [m for m in rows if m.meaningful]
    fast = [m for m in usable if m.api_p99_ms <= p99_ms]
    api = min(fast, key=lambda m: (api_cost_per_million(m, prices), m.memory_mb), default=None)
    batch = min(
        usable, key=lambda m: (batch_cost_per_million(m, prices), m.memory_mb), default=None
    )
    return {
        "api": None if api is None else api.memory_mb,
        "api_rule": f"cheapest per million one-text requests with p99 <= {p99_ms:g} ms",
        "api_note": None
        if api is not None
        else f"no measured size meets p99 <= {p99_ms:g} ms: raise the target or the sizes",
        "batch": None if batch is None else batch.memory_mb,
        "batch_rule": "cheapest per million texts through the S3 path",
    }


def _probe(
    role: str,
    model: Path,
    memory_mb: int,
    texts: Sequence[TextInput],
    repeats: int,
    procs: Path | None,
    long_text: str = "truncate",
) -> tuple[float, dict[str, Any]]:
    """(init seconds from spawn to ready, the probe's result) for one fresh process."""
    from handler.tune import probe  # not at import: `-m handler.tune.probe` imports this first

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "NUM_THREADS")
    }
    env.update(
        {
            "MODEL_DIR": str(model),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "FUNCTION_ROLE": role,
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "OUTPUT_BUCKET": "tune-output",
            "OUTPUT_PREFIX": "predictions/",
            "LONG_TEXT": long_text,
        }
    )
    argv = [sys.executable, "-m", "handler.tune.probe", role, json.dumps(texts), str(repeats)]
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*quota.argv_in(procs), *argv], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        assert proc.stdout is not None
        init, result = math.nan, None
        for line in proc.stdout:
            if line.startswith(probe.READY):
                init = time.perf_counter() - start
            elif line.startswith(probe.RESULT):
                result = json.loads(line[len(probe.RESULT) :])
        proc.wait()
        if proc.returncode != 0 or result is None:
            err.seek(0)
            raise RuntimeError(f"the {role} probe at {memory_mb} MB failed: {err.read()[-2000:]}")
    return init, result


def measure(
    model: Path,
    texts: Sequence[TextInput],
    memory_mb: int,
    use_quota: bool = True,
    long_text: str = "truncate",
) -> Measured:
    vcpus = quota.lambda_vcpus(memory_mb)
    name = f"hf-tune-{os.getpid()}-{memory_mb}"
    group = quota.quota(name, vcpus) if use_quota else contextlib.nullcontext(None)
    with group as procs:
        api_repeats = max(1, math.ceil(API_REQUESTS / len(texts)))
        batch_repeats = max(1, math.ceil(BATCH_TEXTS / len(texts)))
        init_api, api = _probe("api", model, memory_mb, texts, api_repeats, procs, long_text)
        init_batch, batch = _probe(
            "batch", model, memory_mb, texts, batch_repeats, procs, long_text
        )
    if api.get("unreadable"):
        logger.warning(
            "%d of %d texts have nothing this model's vocabulary knows: left out of the timing",
            api["unreadable"],
            len(texts),
        )
    latencies = api["latencies_ms"]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Measured(
        memory_mb=memory_mb,
        vcpus=round(vcpus, 3),
        quota_vcpus=round(vcpus, 3) if procs is not None else None,
        host_cpus=quota.host_cpus(),
        threads=int(api["threads"]),
        init_api_s=round(init_api, 3),
        init_batch_s=round(init_batch, 3),
        api_p50_ms=round(statistics.median(latencies), 2),
        api_p99_ms=round(cuts[98], 2),
        api_billed_ms=round(statistics.fmean(math.ceil(x) for x in latencies), 2),
        batch_texts_per_s=round(batch["texts"] / batch["seconds"], 1),
        max_length_tokens_per_s=round(batch["long_tokens"] / batch["long_seconds"], 1),
    )


def median_of(runs: list[Measured]) -> Measured:
    """One size's figures: the median of each over the rounds."""
    first = runs[0]
    if len(runs) == 1:
        return first

    def med(name: str) -> float:
        return round(float(statistics.median(getattr(m, name) for m in runs)), 3)

    values: dict[str, Any] = {f: med(f) for f in MEASURED_FIELDS if f != "threads"}
    return replace(first, **values)


def host_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


def load_measured(path: Path) -> list[Measured]:
    """Figures from an earlier `tune --json` (e.g. measured on an arm64 host)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = set(Measured.__dataclass_fields__)
        return [Measured(**{k: v for k, v in row.items() if k in fields}) for row in data["sizes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: not the JSON output of `tune --json` ({exc})") from exc


def report(
    rows: list[Measured],
    prices: Prices,
    p99_ms: float,
    how: str,
    quota_applied: bool,
    request_seconds: float = DEFAULT_REQUEST_SECONDS,
) -> dict[str, Any]:
    sizes = []
    for m in rows:
        note = None
        if m.vcpus > m.host_cpus:
            note = f"needs {m.vcpus:.2f} vCPUs; this host has {m.host_cpus}: not representative"
        elif not m.meaningful:
            note = "measured without a CPU quota: below one vCPU this is not the size's speed"
        sizes.append(
            {
                **asdict(m),
                "cost_per_million_api_usd": round(api_cost_per_million(m, prices), 4),
                "cost_per_million_batch_usd": round(batch_cost_per_million(m, prices), 4),
                "provisioned_usd_per_month": round(provisioned_per_month(m.memory_mb, prices), 2),
                **request_budget(m, request_seconds),
                "meaningful": m.meaningful,
                "note": note,
            }
        )
    return {
        "arch": prices.arch,
        "prices": asdict(prices),
        "figures": how,
        "cpu_quota": "cgroup CFS quota of memory/1769 vCPUs"
        if quota_applied
        else "none: cgroups are not writable here; only sizes of one vCPU (1,769 MB) or more are "
        "meaningful, and only up to this host's CPUs",
        "measured": list(MEASURED_FIELDS),
        "computed": [
            "vcpus (memory / 1769)",
            "cost_per_million_api_usd (1e6 x GB x billed seconds x price + requests)",
            f"cost_per_million_batch_usd (GB x 1e6 / texts_per_s x price + one request per "
            f"{TEXTS_PER_OBJECT:,} texts)",
            f"max_request_tokens (max-length tokens/s x {request_seconds:g} s: MAX_REQUEST_TOKENS "
            "for this size)",
            f"default_worst_s (the unset budget, {REQUEST_TOKENS_PER_VCPU} tokens per vCPU, at "
            "max-length tokens/s)",
        ],
        "request_seconds": request_seconds,
        "sizes": sizes,
        "recommendation": recommend(rows, prices, p99_ms),
    }


def _or_dash(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"figures: {result['figures']}; CPU quota: {result['cpu_quota']}",
        "",
        "| memory MB | vCPU | threads | init API / batch s | one text p50 / p99 ms | batch "
        "texts/s | $ per 1M texts, API | $ per 1M texts, batch | max-length tokens/s | "
        f"MAX_REQUEST_TOKENS for {result['request_seconds']:g} s | default budget, worst case s | "
        "$ per month per provisioned environment |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["sizes"]:
        flag = "" if s["meaningful"] else " (*)"
        lines.append(
            f"| {s['memory_mb']}{flag} | {s['vcpus']:.2f} | {s['threads']} | "
            f"{s['init_api_s']:.2f} / {s['init_batch_s']:.2f} | "
            f"{s['api_p50_ms']:.1f} / {s['api_p99_ms']:.1f} | {s['batch_texts_per_s']:.0f} | "
            f"{s['cost_per_million_api_usd']:.3f} | {s['cost_per_million_batch_usd']:.3f} | "
            f"{_or_dash(s['max_length_tokens_per_s'] or None, '.0f')} | "
            f"{_or_dash(s['max_request_tokens'], 'd')} | "
            f"{s['default_budget']}: {_or_dash(s['default_worst_s'], '.1f')} | "
            f"{_or_dash(s.get('provisioned_usd_per_month'), '.2f')} |"
        )
    notes = [f"(*) {s['memory_mb']} MB: {s['note']}" for s in result["sizes"] if s["note"]]
    rec = result["recommendation"]
    p = result["prices"]
    lines += [
        "",
        *notes,
        f"API: {rec['api']} MB ({rec['api_rule']})" if rec["api"] else f"API: {rec['api_note']}",
        f"batch: {rec['batch']} MB ({rec['batch_rule']})",
        f"prices ({p['arch']}, as of {p['as_of']}): ${p['per_gb_second']:.10f} per GB-s, "
        f"${p['per_million_requests']} per million requests; {p['source']}",
        "measured: " + ", ".join(result["measured"]),
        "computed: " + "; ".join(result["computed"]),
    ]
    return "\n".join(lines)


def run(
    model: Path,
    texts: Sequence[TextInput],
    sizes: list[int],
    prices: Prices,
    p99_ms: float,
    measured_file: Path | None = None,
    progress: Any = None,
    rounds: int = DEFAULT_ROUNDS,
    request_seconds: float = DEFAULT_REQUEST_SECONDS,
    long_text: str = "truncate",
) -> dict[str, Any]:
    if measured_file is not None:
        rows = load_measured(measured_file)
        how = f"measured earlier ({measured_file}), costs computed for {prices.arch}"
        quota_applied = all(m.quota_vcpus for m in rows)
        return report(rows, prices, p99_ms, how, quota_applied, request_seconds)
    if prices.arch != host_arch():
        raise InvalidInput(
            f"cannot time {prices.arch} on this {host_arch()} host (emulation is no guide to "
            f"speed): run `python -m handler tune --json` on an {prices.arch} machine (a Graviton "
            "instance, or a Lambda function with the image) and pass its output here with "
            "--measured FILE"
        )
    probe_group = quota.make_group(f"hf-tune-{os.getpid()}-check", 1.0)
    quota.remove_group(probe_group)
    use_quota = probe_group is not None
    if not use_quota and progress:
        progress(
            "cgroups are not writable here: measuring without a CPU quota (only sizes of "
            f"{MB_PER_VCPU} MB and above are meaningful)"
        )
    # Rounds: every size once per round, so that a shared machine's drift falls on all sizes
    # alike; each figure is the median over rounds.
    runs: dict[int, list[Measured]] = {size: [] for size in sizes}
    for r in range(rounds):
        for size in sizes:
            if progress:
                progress(f"round {r + 1}/{rounds}: {size} MB ({quota.lambda_vcpus(size):.2f} vCPU)")
            runs[size].append(measure(model, texts, size, use_quota, long_text))
    rows = [median_of(runs[size]) for size in sizes]
    how = f"measured on this host ({host_arch()}, {quota.host_cpus()} CPUs), long_text={long_text}"
    return report(rows, prices, p99_ms, how, use_quota, request_seconds)

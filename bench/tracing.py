"""What X-Ray tracing (EnableTracing, Powertools' Tracer) costs: on init, and on the HTTP path,
against the same function untraced, measured in one run on this host.

    python bench/tracing.py [--out bench-results] [--rounds 8] [--reps 400]

Init: fresh processes, traced and untraced alternating, each timing import to a built
lambda_handler (the model load included, as on Lambda). HTTP path: one process holding both
handlers, each with its own copy of the model, called alternately with one short text through
lambda_handler (an HTTP API event), as Lambda with X-Ray active calls them (a trace header, the
SDK's UDP emitter). Ratios are traced over untraced.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, SHORT, http_event, local_context, pct, prepare, save, table  # noqa: E402

TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
INIT = """
import time, sys
started = time.perf_counter()
from pathlib import Path
from handler.config import Settings
from handler.function import LambdaFunction, make_lambda_handler
from handler.loading import get_model
settings = Settings.from_env()
make_lambda_handler(LambdaFunction(settings, get_model(settings.model_dir, 1)))
print((time.perf_counter() - started) * 1000)
"""


def _env(model: Path, traced: bool) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAMBDA_TASK_ROOT": str(model.parent),  # on Lambda, as far as the settings can tell
        "MODEL_DIR": str(model),
        "FUNCTION_ROLE": "api",
        "NUM_THREADS": "1",
        "POWERTOOLS_TRACE_DISABLED": "false" if traced else "true",
        "_X_AMZN_TRACE_ID": TRACE_ID,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }


def init_ms(model: Path, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"untraced": [], "traced": []}
    for _ in range(rounds):
        for name, traced in (("untraced", False), ("traced", True)):
            out = subprocess.run(
                [sys.executable, "-c", INIT],
                env=_env(model, traced),
                capture_output=True,
                text=True,
                check=True,
            )
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    return times


def http_ms(model: str, reps: int) -> dict[str, list[float]]:
    """In a child whose environment is _env(traced=True): both handlers in one process."""
    from dataclasses import replace

    from handler.config import Settings
    from handler.function import LambdaFunction, make_lambda_handler
    from handler.loading import load_model
    from handler.observability import logger

    logger.setLevel("WARNING")
    settings = Settings.from_env()
    handlers = {
        "untraced": make_lambda_handler(
            LambdaFunction(replace(settings, tracing=False), load_model(Path(model), 1))
        ),
        "traced": make_lambda_handler(LambdaFunction(settings, load_model(Path(model), 1))),
    }
    event, ctx = http_event(SHORT), local_context()
    times: dict[str, list[float]] = {name: [] for name in handlers}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for i in range(reps + 20):
            for name, handler in handlers.items():
                started = time.perf_counter()
                assert handler(event, ctx)["statusCode"] == 200
                if i >= 20:  # warm-up calls are not counted
                    times[name].append((time.perf_counter() - started) * 1000)
            sink.seek(0)
            sink.truncate()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--rounds", type=int, default=8, help="fresh processes per side (init)")
    parser.add_argument("--reps", type=int, default=400, help="calls per side (HTTP path)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(http_ms(**json.loads(args.child))))
        return 0
    out = Path(args.out)
    result: dict[str, Any] = {}
    for size, paths in prepare(out).items():
        model = paths["int8"]
        init = init_ms(model, args.rounds)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                json.dumps({"model": str(model), "reps": args.reps}),
            ],
            env=_env(model, True),
            capture_output=True,
            text=True,
            check=True,
        )
        http = json.loads(child.stdout.strip().splitlines()[-1])
        result[size] = {
            "init_ms_untraced": round(statistics.median(init["untraced"]), 1),
            "init_ms_traced": round(statistics.median(init["traced"]), 1),
            "http_p50_ms_untraced": round(pct(http["untraced"], 0.5), 3),
            "http_p50_ms_traced": round(pct(http["traced"], 0.5), 3),
            "http_p99_ms_untraced": round(pct(http["untraced"], 0.99), 3),
            "http_p99_ms_traced": round(pct(http["traced"], 0.99), 3),
        }
        r = result[size]
        r["init_ratio"] = round(r["init_ms_traced"] / r["init_ms_untraced"], 3)
        r["http_p50_ratio"] = round(r["http_p50_ms_traced"] / r["http_p50_ms_untraced"], 3)
    save(out, "tracing.json", result)
    print(
        table(
            [
                "model",
                "init ms untraced / traced (ratio)",
                "HTTP p50 ms untraced / traced (ratio)",
                "HTTP p99 ms untraced / traced",
            ],
            [
                [
                    size,
                    f"{r['init_ms_untraced']} / {r['init_ms_traced']} ({r['init_ratio']}x)",
                    f"{r['http_p50_ms_untraced']} / {r['http_p50_ms_traced']} ({r['http_p50_ratio']}x)",
                    f"{r['http_p99_ms_untraced']} / {r['http_p99_ms_traced']}",
                ]
                for size, r in result.items()
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

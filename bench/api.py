"""The HTTP path: lambda_handler with an API Gateway HTTP API (v2) event for one short text, against
`Classifier.predict` of the same text, interleaved call by call in one process.

    python bench/api.py [--out bench-results] [--quick]
    python bench/api.py --against REV [--rounds 6]    # A/B: this checkout's handler vs REV's

What to read: the added milliseconds (Mangum, FastAPI's app, request guard, Powertools logging and
metrics, JSON) and their ratio to predict alone; the budget is 1 ms at p50.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS,
    SHORT,
    against,
    child,
    first_of,
    http_event,
    local_context,
    pct,
    prepare,
    report_child,
    save,
    table,
)


def measure(int8: str, quick: bool) -> dict[str, Any]:
    from handler.config import Settings
    from handler.function import make_lambda_handler
    from handler.observability import logger

    # Either side of an A/B: names from before and after the renames.
    LambdaFunction = first_of(
        ("handler.function", "LambdaFunction"), ("handler.function", "Function")
    )
    get_model = first_of(("handler.loading", "get_model"), ("handler.runtime", "get_model"))

    logger.setLevel("WARNING")
    model_dir = Path(int8)
    model = get_model(model_dir, 1)
    handler = make_lambda_handler(
        LambdaFunction(Settings(model_dir=model_dir, num_threads=1), model)
    )
    event = http_event(SHORT)
    clf = model.classifier
    reps = 200 if quick else 1000
    sink = io.StringIO()
    ctx = local_context()
    with contextlib.redirect_stdout(sink):  # EMF lines go to stdout as on Lambda
        direct, http = [], []
        for _ in range(20):
            assert handler(event, ctx)["statusCode"] == 200
            clf.predict(SHORT)
        for _ in range(reps):  # interleaved, so drift hits both alike
            t = time.perf_counter()
            clf.predict(SHORT)
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            handler(event, ctx)
            http.append((time.perf_counter() - t) * 1000)
            sink.seek(0)
            sink.truncate()
    d, h = pct(direct, 0.5), pct(http, 0.5)
    paired = [b - a for a, b in zip(direct, http, strict=True)]
    return {
        "predict_p50_ms": round(d, 3),
        "lambda_handler_p50_ms": round(h, 3),
        "added_ms_p50": round(h - d, 3),
        "added_ms_paired_median": round(pct(paired, 0.5), 3),
        "ratio": round(h / d, 3),
    }


def render(result: dict[str, dict[str, Any]]) -> str:
    return table(
        [
            "model",
            "predict p50 ms",
            "lambda_handler (HTTP API v2) p50 ms",
            "added ms (p50 difference)",
            "added ms (median of paired differences)",
            "ratio",
        ],
        [
            [
                size,
                v["predict_p50_ms"],
                v["lambda_handler_p50_ms"],
                v["added_ms_p50"],
                v["added_ms_paired_median"],
                v["ratio"],
            ]
            for size, v in result.items()
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--against", metavar="REV", help="A/B with git revision REV's handler")
    parser.add_argument("--rounds", type=int, default=6, help="--against: rounds per side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return report_child(measure(**json.loads(args.child)))
    out = Path(args.out)
    models = prepare(out)
    if args.against:
        rows = []
        for size, paths in models.items():
            spec = {"int8": str(paths["int8"]), "quick": True}
            runs = against(Path(__file__), args.against, out, spec, args.rounds)
            for side, results in runs.items():
                added = statistics.median(r["added_ms_paired_median"] for r in results)
                ratio = statistics.median(r["ratio"] for r in results)
                rows.append([size, side, round(added, 3), round(ratio, 3), len(results)])
        print(table(["model", "handler", "added ms (median)", "ratio (median)", "runs"], rows))
        return 0
    result = {
        size: child(Path(__file__), {"int8": str(p["int8"]), "quick": args.quick})
        for size, p in models.items()
    }
    save(out, "api.json", result)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

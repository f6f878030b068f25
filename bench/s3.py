"""The S3 batch path: throughput through lambda_handler against `Classifier.predict` on the same
texts (moto's in-process S3), and the peak memory of a fresh function process that streams a big
object from a moto server over HTTP (a small random-weight model: streaming memory does not depend
on the model, and a real one would spend the time classifying).

    python bench/s3.py [--out bench-results] [--quick]
    python bench/s3.py --against REV [--rounds 4]     # A/B of the S3 path's throughput ratio
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS,
    against,
    child,
    first_of,
    in_process_s3,
    local_context,
    moto_server,
    peak_rss_mib,
    prepare,
    report_child,
    s3_event,
    save,
    sentences,
    small_model,
    table,
)


def throughput(int8: str, quick: bool, rounds: int = 5) -> dict[str, Any]:
    """The batch path (moto in-process S3) vs Classifier.predict on the same texts: `rounds`
    interleaved rounds; the ratio is the median of the rounds' ratios (drift hits both alike)."""
    import boto3
    from moto import mock_aws

    from handler.adapters.s3_store import S3Store
    from handler.config import Settings
    from handler.function import make_lambda_handler

    # Either side of an A/B: names from before and after the renames.
    LambdaFunction = first_of(
        ("handler.function", "LambdaFunction"), ("handler.function", "Function")
    )
    get_model = first_of(("handler.loading", "get_model"), ("handler.runtime", "get_model"))
    from handler.observability import logger

    logger.setLevel("WARNING")
    in_process_s3()
    texts = sentences()[: 300 if quick else 872]
    model_dir = Path(int8)
    model = get_model(model_dir, 1)
    with mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench-in")
        s3.create_bucket(Bucket="bench-out")
        body = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
        settings = Settings(
            model_dir=model_dir, num_threads=1, input_bucket="bench-in", output_bucket="bench-out"
        )
        handler = make_lambda_handler(LambdaFunction(settings, model, S3Store(s3)))
        via_s3: list[float] = []
        direct: list[float] = []
        for rep in range(rounds):
            key = f"t{rep}.jsonl"
            s3.put_object(Bucket="bench-in", Key=key, Body=body.encode())
            etag = s3.head_object(Bucket="bench-in", Key=key)["ETag"].strip('"')
            t = time.perf_counter()
            handler(s3_event("bench-in", key, etag), local_context())
            via_s3.append(time.perf_counter() - t)
            t = time.perf_counter()
            model.classifier.predict(texts)
            direct.append(time.perf_counter() - t)
    return {
        "texts": len(texts),
        "rounds": rounds,
        "s3_texts_per_s": round(len(texts) / statistics.median(via_s3), 1),
        "predict_texts_per_s": round(len(texts) / statistics.median(direct), 1),
        "ratio": round(statistics.median(d / v for d, v in zip(direct, via_s3, strict=True)), 3),
    }


def stream(event: dict[str, Any], idle: bool) -> dict[str, Any]:
    """In a fresh process: the function's peak RSS after init alone (`idle`), or after it
    classified the object the event names."""
    from handler import lambda_handler
    from handler.local.context import LocalContext

    if idle:
        return {"peak_rss_mib": peak_rss_mib()}
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        response = lambda_handler(event, LocalContext())
    seconds = time.perf_counter() - t
    return {
        "records": response["results"][0]["records"],
        "s": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def memory(model_dir: Path, mb: int) -> dict[str, Any]:
    """Peak RSS of a fresh function process that streams an `mb` MB object from a moto server,
    beside the same function's RSS once initialised: streaming must not grow with the object."""
    import boto3

    with moto_server() as aws:
        os.environ.update(aws)
        s3 = boto3.client("s3")
        for b in ("bench-in", "bench-out"):
            s3.create_bucket(Bucket=b)
        line = (
            json.dumps({"text": ("the plot was great and the acting bad " * 50).strip()}) + "\n"
        ).encode()
        path = RESULTS / f"bench-{mb}mb.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            while fh.tell() < mb * 1_000_000:
                fh.write(line)
        s3.upload_file(str(path), "bench-in", "big.jsonl")
        path.unlink()
        etag = s3.head_object(Bucket="bench-in", Key="big.jsonl")["ETag"].strip('"')
        saved = dict(os.environ)
        os.environ.update(
            MODEL_DIR=str(model_dir),
            INPUT_BUCKET="bench-in",
            OUTPUT_BUCKET="bench-out",
            POWERTOOLS_LOG_LEVEL="WARNING",
            NUM_THREADS="1",
        )
        try:
            event = s3_event("bench-in", "big.jsonl", etag)
            streamed = child(Path(__file__), {"what": "stream", "event": event, "idle": False})
            idle = child(Path(__file__), {"what": "stream", "event": event, "idle": True})
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {
        "object_mb": mb,
        "records": streamed["records"],
        "seconds": round(streamed["s"], 1),
        "peak_rss_mib": streamed["peak_rss_mib"],
        "idle_function_rss_mib": idle["peak_rss_mib"],
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        [size, v["s3_texts_per_s"], v["predict_texts_per_s"], v["ratio"]]
        for size, v in result["throughput"].items()
    ]
    m = result["memory"]
    return (
        table(["model", "S3 path texts/s", "Classifier.predict texts/s", "ratio"], rows)
        + f"\n\nS3 object of {m['object_mb']} MB ({m['records']} records) streamed through "
        f"lambda_handler from a moto server: peak RSS {m['peak_rss_mib']} MiB (the same function "
        f"idle after init: {m['idle_function_rss_mib']} MiB), {m['seconds']} s."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="fewer texts, a 20 MB object")
    parser.add_argument("--against", metavar="REV", help="A/B with git revision REV's handler")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (--against: runs per side)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        steps: dict[str, Callable[..., dict[str, Any]]] = {
            "throughput": throughput,
            "stream": stream,
        }
        return report_child(steps[spec.pop("what")](**spec))
    out = Path(args.out)
    models = prepare(out)
    if args.against:
        rows = []
        for size, paths in models.items():
            spec = {"what": "throughput", "int8": str(paths["int8"]), "quick": args.quick}
            runs = against(Path(__file__), args.against, out, spec, args.rounds)
            for side, results in runs.items():
                ratio = statistics.median(r["ratio"] for r in results)
                rows.append([size, side, round(ratio, 3), len(results)])
        print(table(["model", "handler", "S3 path / predict (median)", "runs"], rows))
        return 0
    result = {
        "throughput": {
            size: child(
                Path(__file__), {"what": "throughput", "int8": str(p["int8"]), "quick": args.quick}
            )
            for size, p in models.items()
        },
        "memory": memory(small_model(out), 20 if args.quick else 200),
    }
    save(out, "s3.json", result)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Very large objects: measured per-shard throughput, and a model of wall time and cost for 1M
and 10M records against concurrency, beside the chained single-worker path it replaced.

    python bench/distributed.py [--records-per-shard 4096] [--rounds 6] [--shard-records 5000]
    python bench/distributed.py --model-only --shard-records 20000   # re-model, no measuring

Measured here, in one run (ratios are what to compare; this machine is shared and noisy):
- shard: `handler.batch.shards.shard` on a byte range of a JSON Lines object in moto's S3
  (ranged GET, parse, classify, part + stats upload), records/s, one thread (Lambda's 1,769 MB
  = one vCPU), stand-in and DistilBERT-base size (random weights), SST-2 sentences;
- single: the single-invocation path on the same records in the same rounds (the baseline: a
  shard must classify as fast as the single path does);
- plan: cutting a JSON Lines object at newlines (MB/s), and the chunk-object plan for .csv/.gz
  (parse + write records, records/s).
Modelled (constants below, us-east-1 list prices): Lambda at 1,769 MB, Step Functions Standard
transitions, S3 requests, S3 reads at S3_MBPS per stream, a cold start per shard, and for the
chained path one worker that, every 15 minutes, re-reads the object up to its checkpoint and
uploads its whole partial output again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import first_of, prepare, sentences  # noqa: E402

# -- model constants (us-east-1 list prices, x86) ---------------------------------------------
LAMBDA_GB_S = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1e6
SFN_TRANSITION = 0.025 / 1000
S3_PUT = 0.005 / 1000  # PUT, COPY (UploadPartCopy), POST, LIST
S3_GET = 0.0004 / 1000
MEMORY_GB = 1769 / 1024  # one vCPU, the thread count measured
S3_MBPS = 80.0  # one stream's S3 read rate inside Lambda (assumed)
COLD_START_S = 1.5  # a shard that starts a new execution environment (assumed, see docs/batch.md)
WAVE_OVERHEAD_S = 1.0  # Step Functions starting a wave of child executions (assumed)
HOP_S = 900.0  # the chained path: one invocation's 15 minutes
TRANSITIONS_PARENT, TRANSITIONS_PER_SHARD = 5, 3


def _records(texts: list[str], n: int) -> bytes:
    return "".join(
        json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n" for i in range(n)
    ).encode()


def measure(model_dir: Path, n: int, rounds: int) -> dict[str, Any]:
    """Shard vs single path on the same n records, interleaved rounds, medians."""
    import boto3
    from moto import mock_aws

    from handler.adapters.s3_store import S3Store
    from handler.batch import shards
    from handler.batch.formats import line_ranges, records
    from handler.batch.job import Destination
    from handler.batch.refs import ObjectRef
    from handler.config import Settings
    from handler.function import make_lambda_handler

    # Either side of an A/B: names from before and after the renames.
    LambdaFunction = first_of(
        ("handler.function", "LambdaFunction"), ("handler.function", "Function")
    )
    get_model = first_of(("handler.loading", "get_model"), ("handler.runtime", "get_model"))
    from handler.local.context import LocalContext
    from handler.observability import logger

    logger.setLevel("WARNING")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        os.environ[k] = v
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    body = _records(sentences(), n)
    model = get_model(model_dir, 1)
    digest = model.manifest_sha256
    shard_s: list[float] = []
    single_s: list[float] = []
    with mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        s3 = boto3.client("s3")
        for bucket in ("bench-in", "bench-out"):
            s3.create_bucket(Bucket=bucket)
        store = S3Store(s3)
        settings = Settings(
            model_dir=model_dir, num_threads=1, input_bucket="bench-in", output_bucket="bench-out"
        )
        handler = make_lambda_handler(LambdaFunction(settings, model, store))
        s3.put_object(Bucket="bench-in", Key="big.jsonl", Body=body)
        etag = s3.head_object(Bucket="bench-in", Key="big.jsonl")["ETag"].strip('"')
        pinned = ObjectRef("bench-in", "big.jsonl", None, etag, len(body))
        dest = Destination("bench-out", "")
        job = shards.make_job(pinned, ".jsonl", False, dest, "bench-out", "_work/", digest, n, 64)
        item = {"index": 0, "first_record": 1, "records": n, "range": [0, len(body)]}
        model.classifier.predict(sentences()[:64])  # warm

        def run_shard(r: int) -> None:
            t = time.perf_counter()
            shards.shard(job, item, model.classifier, store, digest)
            shard_s.append(time.perf_counter() - t)

        def run_single(r: int) -> None:
            key = f"single-{r}.jsonl"
            s3.put_object(Bucket="bench-in", Key=key, Body=body)
            event = {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "bench-in"}, "object": {"key": key}},
                    }
                ]
            }
            t = time.perf_counter()
            handler(event, LocalContext())
            single_s.append(time.perf_counter() - t)

        for r in range(rounds):  # interleaved, each going first in every other round
            first, second = (run_shard, run_single) if r % 2 == 0 else (run_single, run_shard)
            first(r)
            second(r)
    big = body * max(1, (64 << 20) // len(body))
    t = time.perf_counter()
    line_ranges(io.BytesIO(big), 20_000)
    scan_mbps = len(big) / 1e6 / (time.perf_counter() - t)
    t = time.perf_counter()
    count = sum(1 for r in records(io.BytesIO(body), ".jsonl", False) if shards._record_line(r))
    parse_rps = count / (time.perf_counter() - t)
    shard_med, single_med = statistics.median(shard_s), statistics.median(single_s)
    return {
        "records": n,
        "bytes_per_record": round(len(body) / n, 1),
        "shard_records_per_s": round(n / shard_med, 1),
        "single_records_per_s": round(n / single_med, 1),
        "shard_vs_single": round(single_med / shard_med, 3),
        "plan_scan_mb_per_s": round(scan_mbps, 1),
        "plan_chunk_records_per_s": round(parse_rps, 1),
    }


def model_costs(m: dict[str, Any], shard_records: int) -> list[dict[str, Any]]:
    rps, bpr = m["shard_records_per_s"], m["bytes_per_record"]
    rows = []
    for total in (1_000_000, 10_000_000):
        size_mb = total * bpr / 1e6
        out_mb = total * 75 / 1e6  # an output line is ~75 bytes
        # The chained path: one worker; every hop re-reads the object up to its checkpoint
        # (S3 read + parse) and uploads the whole partial output again.
        compute = total / rps
        hops = max(1, math.ceil(compute / HOP_S))
        reread = sum(
            (h * HOP_S * rps) * (bpr / 1e6 / S3_MBPS + 1 / m["plan_chunk_records_per_s"])
            + (h * HOP_S * rps) * 75 / 1e6 / S3_MBPS
            for h in range(1, hops)
        )
        chain_s = compute + reread
        chain_cost = chain_s * MEMORY_GB * LAMBDA_GB_S + hops * LAMBDA_REQUEST
        rows.append(
            {
                "records": total,
                "path": "chained (removed)",
                "concurrency": 1,
                "wall_h": round(chain_s / 3600, 2),
                "cost_usd": round(chain_cost, 2),
            }
        )
        shards = math.ceil(total / shard_records)
        shard_s = shard_records / rps + COLD_START_S + shard_records * bpr / 1e6 / S3_MBPS
        plan_s = size_mb / min(S3_MBPS, m["plan_scan_mb_per_s"])
        merge_s = 5 + shards * 0.05 + out_mb / S3_MBPS  # copies are server-side; small joins read
        for concurrency in (10, 100, 1000):
            waves = math.ceil(shards / concurrency)
            wall = plan_s + waves * (shard_s + WAVE_OVERHEAD_S) + merge_s
            lambda_s = plan_s + shards * shard_s + merge_s
            cost = (
                lambda_s * MEMORY_GB * LAMBDA_GB_S
                + (shards + 3) * LAMBDA_REQUEST
                + (TRANSITIONS_PARENT + TRANSITIONS_PER_SHARD * shards) * SFN_TRANSITION
                + shards * (3 * S3_PUT + 2 * S3_GET) * 2  # shard writes/reads, merge copies
            )
            rows.append(
                {
                    "records": total,
                    "path": "distributed",
                    "concurrency": concurrency,
                    "wall_h": round(wall / 3600, 3),
                    "cost_usd": round(cost, 2),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    parser.add_argument("--records-per-shard", type=int, default=4096, help="measured shard")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--shard-records", type=int, default=5_000, help="modelled shard size")
    parser.add_argument(
        "--model-only", action="store_true", help="re-model from the last run's measurements"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model_only:
        report = json.loads((out / "distributed.json").read_text())
        for size, r in report.items():
            if size != "load_avg_at_start":
                r["model"] = model_costs(r["measured"], args.shard_records)
    else:
        report = {"load_avg_at_start": os.getloadavg()}
        for size, paths in prepare(out).items():
            m = measure(paths["int8"], args.records_per_shard, args.rounds)
            report[size] = {"measured": m, "model": model_costs(m, args.shard_records)}
    (out / "distributed.json").write_text(json.dumps(report, indent=2))
    print(render(report, args.shard_records))
    return 0


def render(report: dict[str, Any], shard_records: int) -> str:
    lines = []
    for size, r in report.items():
        if size == "load_avg_at_start":
            continue
        m = r["measured"]
        lines += [
            f"## {size}: a shard of {m['records']} SST-2 records, 1 thread",
            "",
            f"shard {m['shard_records_per_s']} records/s, single path "
            f"{m['single_records_per_s']} records/s (shard/single {m['shard_vs_single']}x); "
            f"plan: newline scan {m['plan_scan_mb_per_s']} MB/s, chunk plan "
            f"{m['plan_chunk_records_per_s']} records/s",
            "",
            f"| records | path | concurrency | wall (h) | cost (USD) |  (shards of {shard_records})",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['records']:,} | {row['path']} | {row['concurrency']} | {row['wall_h']} | "
            f"{row['cost_usd']} |"
            for row in r["model"]
        ]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

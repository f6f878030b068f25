"""What every benchmark shares: where the stand-in and its data are, the artifacts they measure,
timing that interleaves the paths it compares, child processes, and tables.

This machine's speed drifts by 20% within seconds and differs from the next machine's: every
benchmark measures its baseline in the same run, interleaved with what it compares, and reports
ratios. None imports the test suite.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("BENCH_HANDLER_FROM"):  # an A/B child: `handler` from the other checkout
    sys.path.insert(0, os.environ["BENCH_HANDLER_FROM"])
SHARED = ROOT.parent / "shared"
STANDIN = Path(os.environ.get("STANDIN_MODEL_DIR", SHARED / "models/distilbert-mini-sst2"))
EVAL_A = Path(os.environ.get("STANDIN_EVAL_TSV", SHARED / "data/sst2-validation-a.tsv"))
EVAL_B = EVAL_A.with_name(EVAL_A.name.replace("-a.", "-b."))
RESULTS = ROOT / "bench-results"
SHORT = "A charming, funny and beautifully acted film."
# DistilBERT-base's shape (the real model's), with random weights: latency only.
BASE_CONFIG: dict[str, Any] = dict(
    dim=768,
    n_layers=6,
    n_heads=12,
    hidden_dim=3072,
    vocab_size=30522,
    max_position_embeddings=512,
    id2label={0: "NEGATIVE", 1: "POSITIVE"},
    label2id={"NEGATIVE": 0, "POSITIVE": 1},
)


def sentences() -> list[str]:
    """The SST-2 validation sentences of both halves (text only)."""
    out = []
    for path in (EVAL_A, EVAL_B):
        for i, line in enumerate(path.read_text().splitlines()):
            if i and line.strip():
                out.append(line.rsplit("\t", 1)[0].strip())
    return out


# -- timing -------------------------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: Callable[[], Any], reps: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(pct(samples, 0.5), 3), "p99_ms": round(pct(samples, 0.99), 3)}


def timed_pair(
    fa: Callable[[], Any], fb: Callable[[], Any], reps: int
) -> tuple[dict[str, float], dict[str, float]]:
    """p50/p99 of two functions, measured alternately."""
    for _ in range(10):
        fa()
        fb()
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        for fn, out in ((fa, a), (fb, b)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return tuple(
        {"p50_ms": round(pct(x, 0.5), 3), "p99_ms": round(pct(x, 0.99), 3)} for x in (a, b)
    )  # type: ignore[return-value]


def throughput_pair(
    fa: Callable[[], Any], fb: Callable[[], Any], n: int, repeats: int = 3
) -> tuple[float, float]:
    """Best-of-`repeats` throughput of two functions, run alternately."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((fa, "a"), (fb, "b")):
            t = time.perf_counter()
            fn()
            took = time.perf_counter() - t
            if which == "a":
                best_a = min(best_a, took)
            else:
                best_b = min(best_b, took)
    return round(n / best_a, 1), round(n / best_b, 1)


def throughput(fn: Callable[[], Any], n: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(n / best, 1)


def interleaved_rounds(paths: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each path, `rounds` times; each round runs every path once, in a
    rotating order, so drift hits all alike. Compare paths round by round (`paired`)."""
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def paired(seconds: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of speed(a) / speed(b), i.e. of seconds(b) / seconds(a)."""
    return round(statistics.median(y / x for x, y in zip(seconds[a], seconds[b], strict=True)), 3)


# -- artifacts ----------------------------------------------------------------------------------


def random_distilbert(out: Path, name: str, **shape: Any) -> Path:
    """A DistilBERT classifier of `shape` (BASE_CONFIG's by default) with random weights and the
    stand-in's tokenizer, exported to ONNX, in the hub's layout (made once; torch makes it)."""
    src = out / name
    if not (src / "onnx" / "model.onnx").is_file():
        import torch
        from transformers import DistilBertConfig, DistilBertForSequenceClassification

        from handler.compiler.export import export_onnx

        torch.manual_seed(0)
        model = DistilBertForSequenceClassification(DistilBertConfig(**{**BASE_CONFIG, **shape}))
        model.train(False)
        # Fresh biases are all zero and LayerNorm weights all one: the TorchScript exporter
        # folds such equal tensors into one and reads it through Identity nodes, a graph no
        # trained model exports (the Q/K/V merge, among others, then does not apply). Every
        # 1-D parameter is made distinct, as training makes it.
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 1:
                    param.add_(torch.randn_like(param) * 0.02)
        model.save_pretrained(str(src))
        for file in (
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
        ):
            (src / file).write_bytes((STANDIN / file).read_bytes())
        export_onnx(src, src / "onnx" / "model.onnx")
    return src


def built(src: Path, out: Path, random_weights: bool) -> Path:
    """`src` built for x86-avx2 into `out` (once), gated on SST-2 half a; with random weights the
    gate's accuracy figures mean nothing (latency and memory are what is measured)."""
    from handler.compiler.gate import Gate
    from handler.compiler.pipeline import BuildOptions, build

    gate = Gate(max_accuracy_drop=100.0, min_agreement=0.0) if random_weights else Gate()
    if not (out / "manifest.json").is_file():
        build(BuildOptions(model=str(src), target="x86-avx2", out=out, eval_path=EVAL_A, gate=gate))
    return out


def prepare(out: Path) -> dict[str, dict[str, Path]]:
    """The artifacts the benchmarks measure: {size: {"source", "int8"}} for the stand-in and for
    DistilBERT-base's size with random weights (latency does not depend on weight values)."""
    base = random_distilbert(out, "distilbert-base-random")
    return {
        "stand-in": {"source": STANDIN, "int8": built(STANDIN, out / "stand-in-int8", False)},
        "distilbert-base": {
            "source": base,
            "int8": built(base, out / "distilbert-base-int8", True),
        },
    }


def small_model(out: Path) -> Path:
    """A 2-layer, 64-wide DistilBERT of 128 positions with random weights, built: for
    measurements where the model's arithmetic would only hide what is measured (the S3 path's
    streaming memory; a 512-token model's attention alone takes ~130 MB per chunk of 64)."""
    shape = {
        "dim": 64,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dim": 128,
        "max_position_embeddings": 128,
    }
    return built(random_distilbert(out, "small-random", **shape), out / "small-int8", True)


# -- events, processes, servers -------------------------------------------------------------------


def http_event(text: str) -> dict[str, Any]:
    """An HTTP API (v2) event for POST /classify with one text."""
    http_api_event = _from_either("handler.local.gateway", "http_api_event")

    body = json.dumps({"inputs": text}).encode()
    headers = {"content-type": "application/json", "host": "bench.local"}
    event: dict[str, Any] = http_api_event("POST", "/classify", headers, body, "bench.local")
    return event


def s3_event(bucket: str, key: str, etag: str | None = None) -> dict[str, Any]:
    """An S3 ObjectCreated notification for one object."""
    obj: dict[str, Any] = {"key": key}
    if etag is not None:
        obj["eTag"] = etag
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }
    return {"Records": [record]}


def in_process_s3() -> None:
    """Credentials and region for moto's in-process S3 (mock_aws), and no endpoint override."""
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)


@contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 in this process (a thread); yields the environment a child
    process needs to reach it with boto3."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on the terminal
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        yield {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        server.stop()


def checkout(rev: str, out: Path) -> Path:
    """A worktree of git revision `rev` under `out` (made once): the other side of an A/B."""
    tree = out / f"rev-{rev}"
    if not tree.is_dir():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
            check=True,
            capture_output=True,
        )
    return tree


def local_context() -> Any:
    """Lambda's context object for a local call, from whichever revision's `handler` is loaded
    (an A/B child may run an older layout, where the local tools lived in adapters/local.py)."""
    return _from_either("handler.local.context", "LocalContext")()


def _from_either(module: str, name: str) -> Any:
    """`name` from `module`, or from handler.adapters.local in revisions before handler/local."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return getattr(importlib.import_module("handler.adapters.local"), name)


def first_of(*names: tuple[str, str]) -> Any:
    """The first (module, name) that imports: an A/B child may run a revision from before a
    rename (handler.runtime -> handler.loading, Function -> LambdaFunction)."""
    import importlib

    for module, name in names:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {names}")


def child(script: Path, spec: dict[str, Any], threads: int = 1, code: Path | None = None) -> Any:
    """Run `script --child SPEC` in a fresh interpreter and return the JSON it prints on its
    `JSON ` line: one measurement per process, so each starts from the same state. With `code`,
    `handler` is imported from that checkout instead of this one (an A/B)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    if code is not None:
        env["BENCH_HANDLER_FROM"] = str(code)
    proc = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON "))[5:])


def against(
    script: Path, rev: str, out: Path, spec: dict[str, Any], rounds: int
) -> dict[str, list[Any]]:
    """The same child measurement with this checkout's `handler` and with revision `rev`'s,
    alternating for `rounds` rounds (each side first in every other round)."""
    sides = {"this": None, rev: checkout(rev, out)}
    results: dict[str, list[Any]] = {side: [] for side in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            results[side].append(child(script, spec, code=sides[side]))
    return results


def report_child(result: Any) -> int:
    print("JSON " + json.dumps(result))
    return 0


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB. Not ru_maxrss: Linux keeps ru_maxrss
    across fork+exec, so a child of a large parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


# -- output -------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(out: Path, name: str, result: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(result, indent=2))

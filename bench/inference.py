"""Inference: `Classifier.predict` against its baselines, measured in one run.

    python bench/inference.py [--out bench-results/int8] [--rounds 9]     # per-token vs per-tensor int8
    python bench/inference.py --vs-pipeline [--quick]                    # vs transformers and raw ORT
    python bench/inference.py --against REV [--target x86-avx2]          # this compiler vs REV's

Per-token against per-tensor (the default, about 4 minutes):

Baseline: the previous recipe, a per-tensor dynamic int8 graph of the same model (onnxruntime
`quantize_dynamic`, per-channel, 7-bit weights, SkipLayerNorm fused), one text per
`session.run`. Candidates: the default per-token artifact through `Classifier.predict`
(tokenisation and postprocessing included), raw `session.run` of that artifact on the same
length-sorted micro-batches, and (to attribute the gain) the same build with its last layer on
every token (handler/compiler/read_token.py switched off). One thread; rounds interleave the paths so
the machine's drift hits all alike; ratios are what to read, never absolute figures across runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    EVAL_A,
    RESULTS,
    SHORT,
    STANDIN,
    checkout,
    child,
    interleaved_rounds,
    paired,
    prepare,
    random_distilbert,
    report_child,
    save,
    sentences,
    table,
    throughput,
    throughput_pair,
    timed,
    timed_pair,
)
from handler.compiler import baseline, fusion, read_token, saving, targets  # noqa: E402
from handler.compiler.gate import Gate  # noqa: E402
from handler.compiler.pipeline import BuildOptions, build  # noqa: E402
from handler.inference import Classifier  # noqa: E402
from handler.inference.session import create_session  # noqa: E402


def baseline_graph(source: Path, out: Path) -> Path:
    """Today's recipe, rebuilt the way it was: fused with SkipLayerNorm, per-tensor dynamic."""
    graph = out / "per-tensor.onnx"
    if not graph.is_file():
        config = json.loads((source / "config.json").read_text())
        fused, raw = out / "fused-sln.onnx", out / "per-tensor.raw.onnx"
        fusion.fuse_transformer(source / "onnx" / "model.onnx", fused, config, True)
        baseline.quantize_per_tensor(fused, raw, reduce_range=True)
        saving.optimize_offline(raw, graph)
    return graph


def _keep_whole(src: Path, dst: Path, model_config: dict[str, Any]) -> int:
    dst.write_bytes(src.read_bytes())
    return 0


def measure(
    source: Path, out: Path, rounds: int, n_texts: int, random_weights: bool = False
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / "per-token"
    if not (artifact / "manifest.json").is_file():
        # Random weights (latency only): the gate's accuracy figures mean nothing there.
        gate = Gate(max_accuracy_drop=100.0, min_agreement=0.0) if random_weights else Gate()
        build(BuildOptions(model=str(source), out=artifact, eval_path=EVAL_A, gate=gate))
    whole = out / "per-token-whole-last-layer"
    if not (whole / "manifest.json").is_file():
        with mock.patch.object(read_token, "prune_rows", _keep_whole):
            build(BuildOptions(model=str(source), out=whole, eval_path=EVAL_A, gate=gate))
    clf = Classifier.from_dir(artifact, threads=1)
    whole_clf = Classifier.from_dir(whole, threads=1)
    base = create_session(baseline_graph(source, out), 1, True)
    # The previous recipe as the API served it: Classifier, one text per run.
    base_clf = Classifier(base, clf.tokenizer, replace(clf.config, batching="per_text"))
    inputs = clf.input_names
    texts = sentences()[:n_texts]
    encoded = clf.tokenizer.encode(texts)
    one_by_one = [clf.tokenizer.pad([e]) for e in encoded]
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].length)
    size = clf.config.max_batch_size
    batches = [
        clf.tokenizer.pad([encoded[i] for i in order[s : s + size]])
        for s in range(0, len(order), size)
    ]
    short = clf.tokenizer.pad(clf.tokenizer.encode([SHORT]))

    def baseline_each() -> None:
        for f in one_by_one:
            base.run(None, {k: f[k] for k in inputs})

    def raw_batches() -> None:
        for b in batches:
            clf.session.run(None, {k: b[k] for k in inputs})

    paths = {
        "baseline: per-tensor int8, one text per run": baseline_each,
        "Classifier.predict (per-token int8)": lambda: clf.predict(texts),
        "raw session.run, same artifact and batches": raw_batches,
        "Classifier.predict, last layer on every token": lambda: whole_clf.predict(texts),
    }
    seconds = interleaved_rounds(paths, rounds)
    per_s = {name: round(len(texts) / statistics.median(s), 1) for name, s in seconds.items()}

    singles: dict[str, Callable[[], Any]] = {
        "baseline: per-tensor int8, one text per run": lambda: base.run(
            None, {k: short[k] for k in inputs}
        ),
        "Classifier.predict (per-token int8)": lambda: clf.predict(SHORT),
        "previous API: Classifier.predict, per-tensor int8": lambda: base_clf.predict(SHORT),
        "raw session.run, same artifact and batches": lambda: clf.session.run(
            None, {k: short[k] for k in inputs}
        ),
        "Classifier.predict, last layer on every token": lambda: whole_clf.predict(SHORT),
    }
    lat: dict[str, list[float]] = {name: [] for name in singles}
    for _ in range(20):
        for fn in singles.values():
            fn()
    for _ in range(300 * rounds // 5):
        for name, fn in singles.items():
            start = time.perf_counter()
            fn()
            lat[name].append((time.perf_counter() - start) * 1000)
    p50 = {name: round(statistics.median(v), 3) for name, v in lat.items()}
    b, c, r, w = list(paths)
    api = "previous API: Classifier.predict, per-tensor int8"
    return {
        "model": str(source.name),
        "texts": len(texts),
        "micro_batch": size,
        "recipe": json.loads((artifact / "manifest.json").read_text())["quantization"]["recipe"],
        "texts_per_s": per_s,
        "one_short_text_p50_ms": p50,
        "ratios": {
            "predict_throughput_vs_baseline": paired(seconds, c, b),
            "predict_throughput_vs_raw_same_batches": paired(seconds, c, r),
            "one_text_p50_predict_vs_baseline": round(p50[c] / p50[b], 3),
            "one_text_p50_raw_vs_baseline": round(p50[r] / p50[b], 3),
            "one_text_p50_predict_vs_previous_api": round(p50[c] / p50[api], 3),
            "predict_throughput_vs_last_layer_on_every_token": paired(seconds, c, w),
            "one_text_p50_predict_vs_last_layer_on_every_token": round(p50[c] / p50[w], 3),
        },
    }


def versus_revision(
    rev: str, out: Path, rounds: int, n_texts: int, target: str, fidelity: str = "balanced"
) -> list[dict[str, Any]]:
    """This checkout's compiler against revision `rev`'s: the same model built for the same
    target by each, both artifacts served by this checkout's runtime, timed in interleaved
    rounds (`Classifier.predict` on `n_texts` texts, and on one short text), at the stand-in's
    and DistilBERT-base's size (random weights: latency does not depend on their values)."""
    tree = checkout(rev, out)
    models = {
        "stand-in": (STANDIN, False),
        "distilbert-base": (random_distilbert(out, "distilbert-base-random"), True),
    }
    texts = sentences()[:n_texts]
    results = []
    for size, (source, random_weights) in models.items():
        artifacts: dict[str, Path] = {}
        for side, code in (("this", ROOT), (rev, tree)):
            suffix = "" if side == rev else f"-{fidelity}"
            dst = out / f"{side}-{size}-{target}{suffix}"
            if side == "this" or not (dst / "manifest.json").is_file():
                cmd = [sys.executable, "-m", "handler", "build", "--model", str(source)]
                cmd += ["--target", target, "--out", str(dst), "--eval", str(EVAL_A)]
                if side == "this":
                    cmd += ["--fidelity", fidelity]
                if random_weights:
                    cmd += ["--max-accuracy-drop", "100", "--min-agreement", "0"]
                subprocess.run(cmd, cwd=code, check=True, capture_output=True)
            artifacts[side] = dst
        clfs = {side: Classifier.from_dir(path, threads=1) for side, path in artifacts.items()}
        seconds = interleaved_rounds(
            {side: functools.partial(c.predict, texts) for side, c in clfs.items()}, rounds
        )
        lat: dict[str, list[float]] = {side: [] for side in clfs}
        for _ in range(20):
            for c in clfs.values():
                c.predict(SHORT)
        for _ in range(300 * rounds // 5):
            for side, c in clfs.items():
                start = time.perf_counter()
                c.predict(SHORT)
                lat[side].append((time.perf_counter() - start) * 1000)
        p50 = {side: round(statistics.median(v), 3) for side, v in lat.items()}
        recipes = {
            side: json.loads((p / "manifest.json").read_text())["quantization"].get("recipe")
            for side, p in artifacts.items()
        }
        results.append(
            {
                "size": size,
                "target": target,
                "fidelity": fidelity,
                "recipes": recipes,
                "texts": len(texts),
                "texts_per_s": {
                    side: round(len(texts) / statistics.median(v), 1) for side, v in seconds.items()
                },
                "one_short_text_p50_ms": p50,
                "throughput_this_vs_rev": paired(seconds, "this", rev),
                "one_text_p50_this_vs_rev": round(p50["this"] / p50[rev], 3),
            }
        )
    return results


def render_versus_revision(rev: str, results: list[dict[str, Any]]) -> str:
    rows_ = [
        [
            r["size"],
            f"{r['recipes']['this']} vs {r['recipes'][rev]}",
            f"{r['texts_per_s']['this']} vs {r['texts_per_s'][rev]}",
            r["throughput_this_vs_rev"],
            f"{r['one_short_text_p50_ms']['this']} vs {r['one_short_text_p50_ms'][rev]}",
            r["one_text_p50_this_vs_rev"],
        ]
        for r in results
    ]
    header = [
        "model",
        f"recipe (this vs {rev})",
        f"predict texts/s, {results[0]['texts']} texts",
        "throughput ratio (>= 0.95 wanted)",
        "one short text p50 ms",
        "one-text ratio (<= 1.05 wanted)",
    ]
    return table(header, rows_)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']}, 1 thread, {result['texts']} SST-2 sentences, micro-batch "
        f"{result['micro_batch']}, recipe {result['recipe']}",
        "",
        "| path | texts/s | one short text p50 ms |",
        "|---|---|---|",
    ]
    for name, p50 in result["one_short_text_p50_ms"].items():
        lines.append(f"| {name} | {result['texts_per_s'].get(name, '')} | {p50} |")
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    targets = {
        "predict_throughput_vs_baseline": ">= 1.25",
        "predict_throughput_vs_raw_same_batches": ">= 0.9",
        "one_text_p50_predict_vs_baseline": "<= 1.10",
        "one_text_p50_raw_vs_baseline": "",
        "one_text_p50_predict_vs_previous_api": "<= 1.0 (the API must not get slower)",
        "predict_throughput_vs_last_layer_on_every_token": "(what the row cut gives)",
        "one_text_p50_predict_vs_last_layer_on_every_token": "(what the row cut gives)",
    }
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {value} | {targets[name]} |")
    return "\n".join(lines)


# -- against transformers' pipeline and raw onnxruntime (--vs-pipeline) --------------------------


def versus_pipeline(size: str, paths: dict[str, str], threads: int, quick: bool) -> dict[str, Any]:
    """In a fresh process: one short text's latency and throughput of the transformers pipeline
    (PyTorch fp32), raw ORT fp32 and int8 `session.run`, and `Classifier.predict`."""
    import onnxruntime as ort
    import torch
    from transformers import pipeline

    texts = sentences()[: 200 if quick else 872]
    reps = 60 if quick else 300
    torch.set_num_threads(threads)
    clf = Classifier.from_dir(paths["int8"], threads=threads)
    encoded = clf.tokenizer.encode(texts)
    feeds = [clf.tokenizer.pad([e]) for e in encoded]
    short = clf.tokenizer.pad(clf.tokenizer.encode([SHORT]))
    names = clf.input_names
    fp32 = create_session(Path(paths["source"]) / "onnx" / "model.onnx", threads, False)
    int8 = clf.session
    results: dict[str, Any] = {"model": size, "threads": threads, "texts": len(texts)}

    def run_each(sess: ort.InferenceSession) -> None:
        for f in feeds:
            sess.run(None, {k: f[k] for k in names})

    def run_padded(sess: ort.InferenceSession, batch: int = 32) -> None:
        for i in range(0, len(encoded), batch):
            arrays = clf.tokenizer.pad(encoded[i : i + batch])
            sess.run(None, {k: arrays[k] for k in names})

    results["ort_fp32"] = {
        **timed(lambda: fp32.run(None, {k: short[k] for k in names}), reps),
        "texts_per_s": throughput(lambda: run_each(fp32), len(texts)),
        "texts_per_s_padded_batch32": throughput(lambda: run_padded(fp32), len(texts)),
    }
    # The int8 baseline and Classifier.predict share one session and are measured interleaved,
    # so the machine's drift hits both alike: their ratio is the figure the targets are about.
    raw_lat, clf_lat = timed_pair(
        lambda: int8.run(None, {k: short[k] for k in names}), lambda: clf.predict(SHORT), reps
    )
    raw_tp, clf_tp = throughput_pair(lambda: run_each(int8), lambda: clf.predict(texts), len(texts))
    results["ort_int8"] = {
        **raw_lat,
        "texts_per_s": raw_tp,
        "texts_per_s_padded_batch32": throughput(lambda: run_padded(int8), len(texts)),
    }
    results["classifier"] = {**clf_lat, "texts_per_s": clf_tp}
    pipe = pipeline("text-classification", model=str(paths["source"]), device="cpu")
    n_pipe = min(len(texts), 120 if quick else 300)
    results["pipeline"] = {
        **timed(lambda: pipe(SHORT), max(20, reps // 5), warmup=3),
        "texts_per_s": throughput(lambda: pipe(texts[:n_pipe]), n_pipe, repeats=1),
    }
    return results


def render_versus_pipeline(models: list[dict[str, Any]]) -> str:
    rows = []
    for m in models:
        for key, label in (
            ("pipeline", "transformers pipeline (PyTorch fp32)"),
            ("ort_fp32", "raw ORT fp32 session.run"),
            ("ort_int8", "raw ORT int8 session.run"),
            ("classifier", "Classifier.predict (int8)"),
        ):
            v = m[key]
            rows.append(
                [
                    m["model"],
                    m["threads"],
                    label,
                    v["p50_ms"],
                    v["p99_ms"],
                    v["texts_per_s"],
                    v.get("texts_per_s_padded_batch32", ""),
                ]
            )
    ratios = []
    for m in models:
        if m["threads"] == 1:
            c, raw, p = m["classifier"], m["ort_int8"], m["pipeline"]
            ratios.append(
                [
                    m["model"],
                    "Classifier.predict throughput / raw int8 run",
                    f"{c['texts_per_s'] / raw['texts_per_s']:.2f}x",
                ]
            )
            ratios.append(
                [
                    m["model"],
                    "one-text p50 speed-up over pipeline",
                    f"{p['p50_ms'] / c['p50_ms']:.1f}x",
                ]
            )
    header = ["model", "threads", "path", "p50 ms", "p99 ms", "texts/s"]
    return (
        table([*header, "texts/s (padded batch 32)"], rows)
        + "\n\n"
        + table(["model", "ratio (1 thread)", "value"], ratios)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="default bench-results/int8 (bench-results)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument(
        "--model",
        help="a model folder in the hub's layout (default: the stand-in); e.g. "
        "bench-results/distilbert-base-random, which --vs-pipeline makes",
    )
    parser.add_argument("--random-weights", action="store_true", help="skip the accuracy gate")
    parser.add_argument(
        "--vs-pipeline",
        action="store_true",
        help="against transformers' pipeline and raw ORT, stand-in and DistilBERT-base size, "
        "1 and 2 threads (about 10 minutes)",
    )
    parser.add_argument("--quick", action="store_true", help="--vs-pipeline: fewer repetitions")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="this checkout's compiler against git revision REV's (both artifacts served by "
        "this runtime), stand-in and DistilBERT-base size, 1 thread",
    )
    parser.add_argument("--target", default=targets.DEFAULT_TARGET, help="--against: target")
    parser.add_argument("--fidelity", default="balanced", help="--against: this side's --fidelity")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return report_child(versus_pipeline(**json.loads(args.child)))
    if args.vs_pipeline:
        out = Path(args.out or RESULTS)
        models = prepare(out)
        results = [
            child(
                Path(__file__),
                {
                    "size": size,
                    "paths": {k: str(v) for k, v in paths.items()},
                    "threads": threads,
                    "quick": args.quick,
                },
                threads=threads,
            )
            for size, paths in models.items()
            for threads in (1, 2)
        ]
        save(out, "vs-pipeline.json", results)
        print(render_versus_pipeline(results))
        return 0
    if args.against:
        out = Path(args.out or RESULTS / "against")
        results = versus_revision(
            args.against, out, args.rounds, args.texts, args.target, args.fidelity
        )
        save(out, f"against-{args.against}-{args.target}-{args.fidelity}.json", results)
        print(render_versus_revision(args.against, results))
        return 0
    out = Path(args.out or RESULTS / "int8")
    source = Path(args.model) if args.model else STANDIN
    result = measure(source, out, args.rounds, args.texts, args.random_weights)
    save(out, "int8.json", result)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

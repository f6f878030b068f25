"""Per-token int8 serving against the per-tensor baseline, measured in one run (issue #8).

    python bench/int8.py [--out bench-results/int8] [--rounds 5]

Baseline: the previous recipe, a per-tensor dynamic int8 graph of the same model (onnxruntime
`quantize_dynamic`, per-channel, 7-bit weights, SkipLayerNorm fused), one text per
`session.run`. Candidates: the default per-token artifact through `Classifier.predict`
(tokenisation and postprocessing included), raw `session.run` of that artifact on the same
length-sorted micro-batches, and (to attribute the gain) the same build with its last layer on
every token (handler/compiler/rows.py switched off). One thread; rounds interleave the paths so
the machine's drift hits all alike; ratios are what to read, never absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import EVAL_A, SHORT, STANDIN, sentences  # noqa: E402
from handler.compiler import quantize, rows  # noqa: E402
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
        quantize.fuse_transformer(source / "onnx" / "model.onnx", fused, config, True)
        quantize.quantize_per_tensor(fused, raw, reduce_range=True)
        quantize.optimize_offline(raw, graph)
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
        with mock.patch.object(rows, "prune_rows", _keep_whole):
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
    # This machine's speed drifts by 20% within seconds: each round runs every path once (in a
    # rotating order), and ratios are the median over rounds of that round's ratio.
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - start)
    throughput = {name: round(len(texts) / statistics.median(s), 1) for name, s in seconds.items()}

    def paired(a: str, b: str) -> float:
        """Median over rounds of throughput(a) / throughput(b)."""
        return round(
            statistics.median(y / x for x, y in zip(seconds[a], seconds[b], strict=True)), 3
        )

    singles = {
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
        "texts_per_s": throughput,
        "one_short_text_p50_ms": p50,
        "ratios": {
            "predict_throughput_vs_baseline": paired(c, b),
            "predict_throughput_vs_raw_same_batches": paired(c, r),
            "one_text_p50_predict_vs_baseline": round(p50[c] / p50[b], 3),
            "one_text_p50_raw_vs_baseline": round(p50[r] / p50[b], 3),
            "one_text_p50_predict_vs_previous_api": round(p50[c] / p50[api], 3),
            "predict_throughput_vs_last_layer_on_every_token": paired(c, w),
            "one_text_p50_predict_vs_last_layer_on_every_token": round(p50[c] / p50[w], 3),
        },
    }


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "int8"))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument(
        "--model",
        help="a model folder in the hub's layout (default: the stand-in); e.g. "
        "bench-results/distilbert-base-random, which bench/run.py makes",
    )
    parser.add_argument("--random-weights", action="store_true", help="skip the accuracy gate")
    args = parser.parse_args()
    source = Path(args.model) if args.model else STANDIN
    result = measure(source, Path(args.out), args.rounds, args.texts, args.random_weights)
    (Path(args.out) / "int8.json").write_text(json.dumps(result, indent=2))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

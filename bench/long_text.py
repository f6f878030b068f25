"""Long documents: which way of reading a text longer than the model reads is right most often.

    python bench/long_text.py [--data ../shared/data/imdb-long-a.tsv] [--limit N]
                              [--model int8=DIR --model fp32=DIR] [--windows 64,128,256,510]
    python bench/long_text.py --speed [--model NAME=DIR ...] [--limit 200] [--rounds 5]

Every review in the file is longer than the model's 512 tokens. For each model (by default the
stand-in built for this host's default target, and fp32), one run per window length and overlap
classifies every window of every review (all texts' windows share length-sorted padded
micro-batches, as the runtime runs them); the aggregations are then computed from the same
window logits. Single-window baselines: head truncation (what the pipeline and `truncate` do),
the tail, and head+tail (the first 128 and last 382 tokens, Sun et al. 2019). Prints accuracy,
windows per text and tokens per text per method, and saves the JSON under bench-results/.
Windows are cut by the model's own tokenizer (truncation with a stride: each window gets the
special tokens), so nothing here assumes a vocabulary or two labels.

`--speed` times the runtime's own path (`Classifier.run` with `long_text` truncate and windows,
the model's default windows) on the long reviews, interleaved round by round in one run, and
prints texts/s of each and their ratio (by default for the stand-in and DistilBERT-base's shape
with random weights: the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    EVAL_A,
    RESULTS,
    SHARED,
    STANDIN,
    built,
    interleaved_rounds,
    paired,
    random_distilbert,
    save,
    table,
)
from handler.datafiles import read_labelled  # noqa: E402
from handler.inference import Classifier  # noqa: E402
from handler.inference.postprocess import softmax  # noqa: E402
from handler.inference.tokenizer import Encoded  # noqa: E402

LONG = SHARED / "data" / "imdb-long-a.tsv"
HEAD_TAIL = (128, 382)  # content tokens kept from the start and the end (Sun et al., 2019)


def aggregate(method: str, logits: np.ndarray, tokens: np.ndarray) -> Any:
    """One text's scores from its windows' logits (windows x labels)."""
    probs = softmax(logits.astype(np.float32))
    if method == "mean_prob":
        return probs.mean(0)
    if method == "weighted_prob":
        return (probs * tokens[:, None]).sum(0) / tokens.sum()
    if method == "mean_logits":
        return softmax(logits.mean(0, keepdims=True).astype(np.float32))[0]
    if method == "max_confidence":
        return probs[int(probs.max(1).argmax())]
    if method == "vote":
        votes = np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.float32)
        return votes + probs.mean(0) * 1e-3  # ties go to the mean probability
    raise ValueError(method)


AGGREGATIONS = ("mean_prob", "weighted_prob", "mean_logits", "max_confidence", "vote")


def edges(head: Encoded) -> tuple[list[int], list[int], list[int], list[int]]:
    """(leading specials, trailing specials, their type ids) of a one-text encoding."""
    return head.ids[:1], head.ids[-1:], head.type_ids[:1], head.type_ids[-1:]


def single_windows(clf: Classifier, texts: list[str]) -> dict[str, list[Encoded]]:
    """head (truncation), tail and head+tail: one row per text each."""
    tok = clf.tokenizer
    heads = tok.encode(texts)
    raw = tok.clone(truncation=None)
    out: dict[str, list[Encoded]] = {"truncate (head)": heads, "tail": [], "head+tail": []}
    room = clf.config.max_length - (heads[0].length - heads[0].content_tokens)
    for text, head in zip(texts, heads, strict=True):
        content = raw.encode(text, add_special_tokens=False).ids
        lead, trail, tlead, ttrail = edges(head)
        for name, ids in (
            ("tail", content[-room:]),
            ("head+tail", content[: HEAD_TAIL[0]] + content[-(room - HEAD_TAIL[0]) :]),
        ):
            full = lead + ids + trail
            out[name].append(Encoded(full, tlead + [0] * len(ids) + ttrail, True, len(ids)))
    return out


def run(clf: Classifier, rows: list[Encoded]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    results = clf.infer(rows)
    return np.stack([r.logits for r in results]), time.perf_counter() - start


def measure(
    clf: Classifier,
    texts: list[Any],
    gold: np.ndarray,
    windows: list[int],
    overlaps: list[float] = (0.0, 0.25, 0.5),  # type: ignore[assignment]
) -> list[Any]:
    rows: list[dict[str, Any]] = []
    base_seconds = 0.0
    for name, encoded in single_windows(clf, texts).items():
        lg, seconds = run(clf, encoded)
        acc = float((lg.argmax(1) == gold).mean())
        base_seconds = base_seconds or seconds
        tokens = sum(e.length for e in encoded) / len(texts)
        rows.append(
            {
                "method": name,
                "window": None,
                "overlap": None,
                "accuracy": acc,
                "windows_per_text": 1.0,
                "tokens_per_text": tokens,
                "time_vs_truncate": seconds / base_seconds,
            }
        )
    for window in windows:
        for overlap in sorted({int(window * f) for f in overlaps}):
            specials = clf.tokenizer.num_special_tokens
            if overlap >= window - specials:
                continue
            tok = clf.tokenizer.clone(truncation=(window, overlap))
            per_text = [clf.tokenizer.windows(tok, t) for t in texts]
            flat = [w for ws in per_text for w in ws]
            lg, seconds = run(clf, flat)
            counts = [len(ws) for ws in per_text]
            cuts = np.cumsum([0, *counts])
            lengths = np.asarray([w.content_tokens for w in flat], dtype=np.float32)
            for method in AGGREGATIONS:
                scores = np.stack(
                    [aggregate(method, lg[a:b], lengths[a:b]) for a, b in itertools.pairwise(cuts)]
                )
                rows.append(
                    {
                        "method": method,
                        "window": window,
                        "overlap": overlap,
                        "accuracy": float((scores.argmax(1) == gold).mean()),
                        "windows_per_text": float(np.mean(counts)),
                        "tokens_per_text": sum(w.length for w in flat) / len(texts),
                        "time_vs_truncate": seconds / base_seconds,
                    }
                )
    return rows


def speed(models: dict[str, Path], data: Path, limit: int, rounds: int, threads: int) -> Any:
    """texts/s of truncate and windows through Classifier.run, interleaved, per model."""
    from handler.datafiles import read_texts

    texts = read_texts(data)[: limit or None]
    rows, report = [], {}
    for name, folder in models.items():
        clf = Classifier.from_dir(folder, threads=threads)
        clf.answer(texts[:4], long_text="windows")  # warm both shapes
        paths: dict[str, Any] = {
            m: (lambda m=m, c=clf: c.answer(texts, long_text=m)) for m in ("truncate", "windows")
        }
        seconds = interleaved_rounds(paths, rounds)
        per = {m: len(texts) / min(v) for m, v in seconds.items()}
        ratio = paired(seconds, "truncate", "windows")
        windows = sum(r.windows for r in clf.answer(texts, long_text="windows").results) / len(
            texts
        )
        report[name] = {"texts_per_s": per, "windows_vs_truncate_time": ratio, "windows": windows}
        rows.append(
            [
                name,
                f"{per['truncate']:.1f}",
                f"{per['windows']:.1f}",
                f"{ratio:.2f}x",
                f"{windows:.1f}",
            ]
        )
    print(f"{len(texts)} long reviews, {threads} thread(s), {rounds} interleaved rounds")
    print(
        table(
            ["model", "truncate texts/s", "windows texts/s", "windows' time", "windows/text"], rows
        )
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=LONG)
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR of a built model")
    parser.add_argument("--windows", default="64,128,256,512")
    parser.add_argument("--overlaps", default="0,0.25,0.5", help="fractions of the window")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "long-text")
    parser.add_argument("--speed", action="store_true", help="time truncate vs windows")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.speed:
        models = (
            {k: Path(v) for k, v in (m.split("=", 1) for m in args.model)}
            if args.model
            else speed_models(args.out)
        )
        result = speed(models, args.data, args.limit or 200, args.rounds, args.threads)
        save(args.out, "long_text_speed", result)
        return 0
    models = dict(m.split("=", 1) for m in args.model) if args.model else default_models(args.out)
    windows = [int(w) for w in args.windows.split(",")]
    report: dict[str, Any] = {"data": str(args.data), "models": {}}
    for name, folder in models.items():
        clf = Classifier.from_dir(folder, threads=args.threads)
        data = read_labelled(args.data, clf.id2label)
        texts, gold = data.texts, np.asarray(data.labels)
        if args.limit:
            texts, gold = texts[: args.limit], gold[: args.limit]
        assert all(e.truncated for e in clf.tokenizer.encode(texts)), "every text must be long"
        overlaps = [float(f) for f in args.overlaps.split(",")]
        rows = measure(clf, texts, gold, windows, overlaps)
        report["models"][name] = {"folder": str(folder), "texts": len(texts), "rows": rows}
        print(f"\n{name} ({len(texts)} reviews, all longer than {clf.config.max_length} tokens)")
        print(
            table(
                [
                    "method",
                    "window",
                    "overlap",
                    "accuracy",
                    "windows/text",
                    "tokens/text",
                    "time vs truncate",
                ],
                [
                    [
                        r["method"],
                        r["window"] or "-",
                        r["overlap"] if r["overlap"] is not None else "-",
                        f"{r['accuracy']:.3f}",
                        f"{r['windows_per_text']:.1f}",
                        f"{r['tokens_per_text']:.0f}",
                        f"{r['time_vs_truncate']:.2f}x",
                    ]
                    for r in rows
                ],
            )
        )
    save(args.out, "long_text", report)
    return 0


def default_models(out: Path) -> dict[str, Path]:
    from handler.compiler.pipeline import BuildOptions, build

    models = {}
    for name, target in (("int8", "x86-avx2"), ("fp32", "none")):
        folder = out / f"stand-in-{name}"
        if not (folder / "manifest.json").is_file():
            build(BuildOptions(model=str(STANDIN), target=target, out=folder, eval_path=EVAL_A))
        models[name] = folder
    return models


def speed_models(out: Path) -> dict[str, Path]:
    base = random_distilbert(out, "distilbert-base-random")
    return {
        "stand-in": default_models(out)["int8"],
        "distilbert-base": built(base, out / "distilbert-base-int8", True),
    }


if __name__ == "__main__":
    raise SystemExit(main())

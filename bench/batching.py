"""Batching modes: what serving one text per run ("per_text") and batching only texts of equal
token length, unpadded ("same_length", the arm64 artifacts' mode where padded rows are not
exact) keep of length-sorted padded micro-batches ("padded"), in one run.

    python bench/batching.py [--out DIR] [--rounds 5] [--model stand-in|distilbert-base]

The same artifact (the default x86-avx2 build) served three ways through `Classifier.predict`,
on the SST-2 validation sentences in chunks of 512 (the S3 path's default chunk), interleaved
rounds, medians. On this host's kernels every mode answers alike; the figures say what each
mode costs where it is the one that is exact (Graviton: measure there for absolute numbers;
qemu's timings mean nothing).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from itertools import groupby
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, interleaved_rounds, prepare, save, sentences, table  # noqa: E402
from handler.inference import Classifier  # noqa: E402

CHUNK = 512
MODES = ("padded", "same_length", "per_text")


def runs_per_mode(clf: Classifier, texts: list[str]) -> dict[str, int]:
    """How many session.run calls each mode makes for `texts` in chunks of CHUNK."""
    out = {}
    for mode in MODES:
        runs = 0
        for s in range(0, len(texts), CHUNK):
            lengths = sorted(e.length for e in clf.tokenizer.encode(texts[s : s + CHUNK]))
            groups = [lengths] if mode == "padded" else [list(g) for _, g in groupby(lengths)]
            size = 1 if mode == "per_text" else clf.config.max_batch_size
            runs += sum(-(-len(g) // size) for g in groups)
        out[mode] = runs
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="stand-in", choices=["stand-in", "distilbert-base"])
    args = parser.parse_args()
    artifact = prepare(Path(args.out))[args.model]["int8"]
    texts = sentences()
    base = Classifier.from_dir(artifact, threads=1)
    served = {
        m: Classifier(base.session, base.tokenizer, replace(base.config, batching=m)) for m in MODES
    }

    def serve(clf: Classifier) -> None:
        for s in range(0, len(texts), CHUNK):
            clf.predict(texts[s : s + CHUNK])

    paths: dict[str, Callable[[], None]] = {
        m: functools.partial(serve, c) for m, c in served.items()
    }
    seconds = interleaved_rounds(paths, args.rounds)
    runs = runs_per_mode(base, texts)
    padded = statistics.median(seconds["padded"])
    rows = [
        [
            m,
            runs[m],
            round(len(texts) / statistics.median(seconds[m]), 1),
            round(padded / statistics.median(seconds[m]), 3),
        ]
        for m in MODES
    ]
    result = {"model": args.model, "texts": len(texts), "chunk": CHUNK, "rows": rows}
    save(Path(args.out), "batching.json", result)
    print(f"{args.model}, {len(texts)} SST-2 texts in chunks of {CHUNK}, {args.rounds} rounds")
    print(table(["batching", "session.run calls", "texts/s", "throughput vs padded"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Accuracy of every target on text the build never saw, against fp32 and the previous recipe.

    python bench/accuracy.py [--out bench-results/accuracy] [--ood FILE] [--rows T:F,...]

Builds the stand-in for each target with the gate on SST-2 half a (as the tests do), then
measures on half b (436 labelled sentences) and, for label agreement, half b plus review text
of other kinds (handler/tune/sample.py). Rows: fp32, the previous per-tensor recipe (dynamic int8,
7-bit weights, one text per run) and each per-token target. Where this CPU's u8s8 sums saturate
(no VNNI), a full-range artifact is measured through its exact twin: the numbers a VNNI or arm64
CPU computes (see handler/compiler/per_token.py). Where qemu-aarch64 and an arm64 Python are at
hand (scripts/arm64_root.sh), the arm64 artifact is measured on an emulated Graviton2, as its
build's gate is (handler/compiler/on_target.py). Out-of-domain columns: the build's own figures on
unlabelled text (default: 1,500 Python standard library docstring lines, handler/compiler/agreement.py),
and agreement with fp32 on unseen out-of-domain text (`--ood FILE`, one text per line; default:
20,000 Debian package descriptions from this machine's apt lists, bench/ood.py), measured on this
host's kernels (the arm64 row too: 20,000 texts under emulation would take hours).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import EVAL_A, EVAL_B, STANDIN  # noqa: E402
from bench.inference import baseline_graph  # noqa: E402
from bench.ood import debian_descriptions  # noqa: E402
from handler.compiler import agreement, on_target, per_token, targets  # noqa: E402
from handler.compiler.pipeline import BuildOptions, build  # noqa: E402
from handler.datafiles import read_labelled, read_texts  # noqa: E402
from handler.inference import Classifier  # noqa: E402
from handler.inference.postprocess import SINGLE_LABEL  # noqa: E402
from handler.inference.session import create_session  # noqa: E402
from handler.inference.tokenizer import TextInput  # noqa: E402
from handler.tune.sample import REVIEWS  # noqa: E402

ROWS = [  # (target, fidelity)
    ("none", "balanced"),
    ("x86-avx2", "balanced"),
    ("x86-avx2", "high"),
    ("x86-vnni", "balanced"),
    ("x86-vnni", "high"),
    ("arm64", "balanced"),
]


def logits(clf: Classifier, texts: Sequence[TextInput]) -> Any:
    return np.stack([r.logits for r in clf.answer(texts).results])


def row(name: str, lg: Any, ref: Any, gold: Any, n_b: int, extra: dict[str, Any]) -> dict[str, Any]:
    pred, ref_pred = lg.argmax(1), ref.argmax(1)
    acc, ref_acc = float((pred[:n_b] == gold).mean()), float((ref_pred[:n_b] == gold).mean())
    return {
        "artifact": name,
        "accuracy_half_b": round(acc, 4),
        "drop_points": round((ref_acc - acc) * 100, 2),
        "agreement_half_b": round(float((pred[:n_b] == ref_pred[:n_b]).mean()), 4),
        "agreement_all": round(float((pred == ref_pred).mean()), 4),
        "n_all": len(pred),
        **extra,
    }


def scores(clf: Classifier, texts: Sequence[TextInput]) -> Any:
    return np.concatenate(
        [clf.answer(texts[i : i + 512]).scores for i in range(0, len(texts), 512)]
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "accuracy"))
    parser.add_argument(
        "--ood", help="unseen out-of-domain text, one per line (default: bench/ood.py)"
    )
    parser.add_argument(
        "--rows",
        help="only these TARGET:FIDELITY rows, comma-separated (fp32 and the previous recipe, "
        "the reference, always come first); default: all",
    )
    args = parser.parse_args()
    chosen = ROWS
    if args.rows:
        wanted = [tuple(r.split(":", 1)) for r in args.rows.split(",")]
        unknown = [":".join(r) for r in wanted if r not in ROWS]
        if unknown:
            parser.error(f"unknown rows {unknown}; known: {[':'.join(r) for r in ROWS]}")
        chosen = [ROWS[0], *(r for r in ROWS[1:] if r in wanted)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ood = read_texts(Path(args.ood)) if args.ood else debian_descriptions()
    saturates = targets.host_saturates()
    rows: list[dict[str, Any]] = []
    ref = gold = ood_ref = None
    for target, fidelity in chosen:
        folder = out / f"{target}-{fidelity}"
        manifest = build(
            BuildOptions(
                model=str(STANDIN), target=target, out=folder, eval_path=EVAL_A, fidelity=fidelity
            )
        )
        clf = Classifier.from_dir(folder)
        data = read_labelled(EVAL_B, clf.id2label)
        texts = data.texts + REVIEWS
        recipe = manifest["quantization"].get("recipe", "fp32")
        measured_as = "as shipped, on this host"
        emulator, _ = on_target.find(target)
        if emulator is not None:  # arm64 on x86: the target's arithmetic, as the build's gate
            lg = emulator.scores(folder, texts, "none")
            measured_as = f"on an emulated {on_target.CPU} (qemu-aarch64)"
        elif recipe in targets.RECIPES and saturates and not targets.RECIPES[recipe].avx2_safe:
            with tempfile.TemporaryDirectory() as tmp:
                twin = Path(tmp) / "twin.onnx"
                per_token.exact_twin_file(folder / "model.onnx", twin)
                clf = Classifier(create_session(twin, 1, True), clf.tokenizer, clf.config)
            measured_as = "exact twin (this CPU lacks VNNI)"
        if emulator is None:
            lg = logits(clf, texts)
        ood_scores = scores(clf, ood) if ood else None
        if ref is None:
            ref, gold, ood_ref = lg, np.asarray(data.labels), ood_scores
            base = Classifier(
                create_session(baseline_graph(STANDIN, out / "baseline"), 1, True),
                clf.tokenizer,
                replace(clf.config, batching="per_text"),
            )
            rows.append(row("fp32 (none)", lg, ref, gold, len(data.texts), {"recipe": "fp32"}))
            rows.append(
                row(
                    "previous recipe: per-tensor dynamic int8, 7-bit weights",
                    logits(base, texts),
                    ref,
                    gold,
                    len(data.texts),
                    {
                        "recipe": "per_tensor",
                        "measured_as": "one text per run",
                        "unseen_out_of_domain": agreement.measure(
                            ood_ref, scores(base, ood), SINGLE_LABEL
                        )
                        if ood_ref is not None
                        else None,
                    },
                )
            )
            continue
        unseen = (
            agreement.measure(ood_ref, ood_scores, SINGLE_LABEL)
            if ood_ref is not None and ood_scores is not None
            else None
        )
        rows.append(
            row(
                f"{target} ({fidelity})",
                lg,
                ref,
                gold,
                len(data.texts),
                {
                    "recipe": recipe,
                    "measured_as": measured_as,
                    "model_mb": round(manifest["sizes_bytes"]["artifact_model"] / 1e6, 1),
                    "gate_agreement_report_split": manifest["verification"]["agreement"],
                    "unlabelled": manifest["verification"]["unlabelled"],
                    "unseen_out_of_domain": unseen,
                },
            )
        )
    (out / "accuracy.json").write_text(json.dumps(rows, indent=2))
    print(
        "| artifact | recipe | accuracy (half b, n=436) | drop vs fp32 (points) | agreement "
        f"(half b) | agreement (half b + reviews, n=486) | docstrings: agreement (flips of "
        f"1,500) | docstrings: score diff p50 / p99 / max | unseen: agreement (flips of "
        f"{len(ood):,}) | unseen: score diff p50 / p99 / max | measured as |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for key in ("unlabelled", "unseen_out_of_domain"):
            fig = r.get(key)
            cells.append(f"{fig['agreement']:.4f} ({fig['flips']})" if fig else "")
            cells.append("{p50} / {p99} / {max}".format(**fig["score_diff"]) if fig else "")
        print(
            f"| {r['artifact']} | {r['recipe']} | {r['accuracy_half_b']:.4f} | {r['drop_points']} | "
            f"{r['agreement_half_b']:.4f} | {r['agreement_all']:.4f} | {' | '.join(cells)} | "
            f"{r.get('measured_as', '')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

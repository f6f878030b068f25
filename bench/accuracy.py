"""Accuracy of every target on the full GLUE SST-2 validation split (both halves, 872 sentences).

    python bench/accuracy.py [--out bench-results/accuracy]

Builds the stand-in for each target (the gate runs on half a, as in the tests), then evaluates
each artifact on a + b and compares its labels with the fp32 build's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handler.build.pipeline import BuildOptions, build  # noqa: E402
from handler.evaluate import evaluate, read_labelled  # noqa: E402
from handler.inference import Classifier  # noqa: E402

SHARED = ROOT.parent / "shared"
STANDIN = Path(os.environ.get("STANDIN_MODEL_DIR", SHARED / "models/distilbert-mini-sst2"))
EVAL_A = Path(os.environ.get("STANDIN_EVAL_TSV", SHARED / "data/sst2-validation-a.tsv"))
EVAL_B = EVAL_A.with_name(EVAL_A.name.replace("-a.", "-b."))
TARGETS = ["none", "x86-avx2", "x86-vnni", "arm64"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "accuracy"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    full = out / "sst2-validation-full.tsv"
    full.write_text(EVAL_A.read_text() + "".join(EVAL_B.read_text().splitlines(True)[1:]))
    rows, reference = [], None
    for target in TARGETS:
        folder = out / target
        manifest = build(
            BuildOptions(model=str(STANDIN), target=target, out=folder, eval_path=EVAL_A)
        )
        clf = Classifier.from_dir(folder)
        data = read_labelled(full, clf.id2label)
        figures = evaluate(clf, data)
        labels = np.asarray([int(np.argmax(r.logits)) for r in clf.run(data.texts)])
        if reference is None:
            reference = labels
        rows.append(
            {
                "target": target,
                "accuracy": figures["accuracy"],
                "n": figures["n"],
                "agreement_with_fp32": round(float((labels == reference).mean()), 4),
                "model_mb": round(manifest["files"]["model.onnx"]["bytes"] / 1e6, 1),
                "recipe": manifest["quantization"].get("recipe", "fp32"),
                "gate_agreement_half_a": manifest["verification"]["agreement"],
            }
        )
    (out / "accuracy.json").write_text(json.dumps(rows, indent=2))
    print(
        "| target | accuracy (n=872) | agreement with fp32 | model MB | recipe | gate agreement (half a) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']} | {r['accuracy']:.4f} | {r['agreement_with_fp32']:.4f} | {r['model_mb']} | "
            f"{r['recipe']} | {r['gate_agreement_half_a']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One cold start, in the process that runs this file: `python bench/cold_probe.py KIND SPEC`.
Prints `RESULT <time.time() when done> <peak RSS KiB>` on stderr. Standard library only, so
that what it imports is what the kind measures (bench/cold_start.py --vs-pipeline runs it).

Kinds: pipeline (transformers, PyTorch fp32), ort_int8 (onnxruntime + tokenizers, nothing of
this project), classifier (handler.inference), function (lambda_handler on an HTTP event).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path


def pipeline(spec: dict[str, str]) -> None:
    import torch
    from transformers import pipeline

    torch.set_num_threads(1)
    pipeline("text-classification", model=spec["source"], device="cpu")(spec["text"])


def ort_int8(spec: dict[str, str]) -> None:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        spec["int8"] + "/model.onnx", options, providers=["CPUExecutionProvider"]
    )
    encoded = Tokenizer.from_file(spec["int8"] + "/tokenizer.json").encode(spec["text"])
    feeds = {
        "input_ids": np.array([encoded.ids]),
        "attention_mask": np.array([encoded.attention_mask]),
    }
    session.run(None, feeds)


def classifier(spec: dict[str, str]) -> None:
    from handler.inference import Classifier

    Classifier.from_dir(spec["int8"]).predict(spec["text"])


def function(spec: dict[str, str]) -> None:
    from handler import lambda_handler
    from handler.local.context import LocalContext

    event = json.loads(spec["event"])
    assert lambda_handler(event, LocalContext())["statusCode"] == 200


KINDS = {"pipeline": pipeline, "ort_int8": ort_int8, "classifier": classifier, "function": function}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    KINDS[sys.argv[1]](json.loads(sys.argv[2]))
    status = Path("/proc/self/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+)", status).group(1)  # type: ignore[union-attr]
    sys.stderr.write(f"RESULT {time.time()} {hwm}\n")

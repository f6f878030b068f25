"""Run under qemu-user `-cpu Haswell` by tests/compiler/test_per_token.py: what a CPU without VNNI
computes for a built artifact.

`python -m tests.compiler.no_vnni_probe MODEL_DIR TEXTS_JSON GEMM_INPUTS_NPZ OUT_NPZ` prints JSON:
whether this CPU's u8s8 kernel saturates, each text's logits run alone and in one padded batch,
and writes OUT_NPZ: every integer GEMM of the artifact (its own int8 weights and activation zero
point, as MatMulInteger) applied to the uint8 activations in GEMM_INPUTS_NPZ. Integer results
carry no float rounding, so they can be compared across CPUs to the bit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def integer_gemms(model_path: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """Each MatMulIntegerToFloat node of the artifact, named by its weight, as a MatMulInteger
    (int32 out, the same u8s8 MLAS kernel without the float scaling) on the given activations."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    nodes, graph_inputs, outputs, used = [], [], [], []
    for node in model.graph.node:
        weight = node.input[1] if node.op_type == "MatMulIntegerToFloat" else None
        if weight is None or weight not in inputs or weight in used:
            continue
        used.append(weight)
        a, zp = f"{weight}/a", node.input[4]
        nodes.append(helper.make_node("MatMulInteger", [a, weight, zp], [f"{weight}/y"]))
        graph_inputs.append(helper.make_tensor_value_info(a, TensorProto.UINT8, ["rows", None]))
        outputs.append(helper.make_tensor_value_info(f"{weight}/y", TensorProto.INT32, None))
    graph = helper.make_graph(
        nodes,
        "integer_gemms",
        graph_inputs,
        outputs,
        [inits[name] for name in {*used, *(n.input[2] for n in nodes)}],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), opts, ["CPUExecutionProvider"])
    values = sess.run(None, {f"{w}/a": inputs[w] for w in used})
    return dict(zip(used, values, strict=True))


def main(argv: list[str]) -> None:
    from handler.compiler.targets import host_saturates
    from handler.inference import Classifier

    model_dir, texts = Path(argv[0]), json.loads(argv[1])
    clf = Classifier.from_dir(model_dir)
    alone = np.concatenate([clf.logits([e]) for e in clf.tokenizer.encode(texts)])
    batched = clf.logits(clf.tokenizer.encode(texts))
    with np.load(argv[2]) as data:
        inputs = {name: data[name] for name in data.files}
    np.savez(argv[3], **integer_gemms(model_dir / clf.config.model_file, inputs))
    print(
        json.dumps(
            {"saturates": host_saturates(), "alone": alone.tolist(), "batched": batched.tolist()}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])

"""End-to-end builds on the stand-in model (../shared, or STANDIN_MODEL_DIR): every target, the
gate, the manifest, tokenizer and graph parity with transformers/PyTorch where installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.compiler import per_token, targets
from handler.compiler.pipeline import BuildOptions, build
from handler.datafiles import read_labelled
from handler.errors import ArtifactError, GateFailed
from handler.evaluate import evaluate
from handler.inference import Classifier
from handler.inference.tokenizer import TextTokenizer
from handler.manifest import check_files

pytestmark = pytest.mark.slow
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

VARIED = [
    "Hello world!",
    "Crème brûlée à la café: naïve façade, ÉLAN, Ångström.",
    "東京は素晴らしい。我喜欢这部电影。한국어 텍스트",
    "Great film 😀🎬👍🏽 — totally worth it…",
    "tabs\tand\nnewlines\r\n and \x00 nulls \x07 bell \u200b zero-width",
    "Don't you think it's ``quoted'' -- and (parenthesised)?",
    "   leading and trailing spaces   ",
    "UPPER lower MiXeD 1234567890 3.14 $100 #tag @user https://example.com/a?b=c",
]


def test_manifest_records_source_target_checksums_and_gate(standin_built: Path) -> None:
    manifest = check_files(standin_built)
    # The graph and its weights apart: onnxruntime maps the weights instead of parsing them.
    assert set(manifest["files"]) == {
        "model.onnx",
        "model.onnx.data",
        "tokenizer.json",
        "config.json",
    }
    assert manifest["files"]["model.onnx"]["bytes"] < 1_000_000
    assert manifest["fusions"]["MultiHeadAttention"] == 6  # one per layer
    # The last layer after its keys and values, on token 0 only (handler/compiler/read_token.py).
    assert manifest["fusions"]["last_layer_on_selected_token"] == 10
    assert manifest["source"]["model_type"] == "distilbert"
    assert manifest["target"]["name"] == "x86-avx2"
    quant = manifest["quantization"]
    assert quant["method"] == "per_token" and quant["avx2_safe"] is True
    assert quant["recipe"] in targets.TARGETS["x86-avx2"].recipes
    # Calibrated on the selection split and docstrings the gate never reports on.
    refined = quant["refinements"]
    assert refined["calibration"]["texts"] > 1000 and refined["calibration"]["gemm_inputs"] == 24
    assert refined["fp32_channels_per_input"] == 4
    assert refined["fp32_channels_on"] == ["gelu outputs"]
    assert refined["centred"] == ["layernorm outputs", "attention outputs"]
    # What was: every LayerNorm output a GEMM reads (the embeddings' and 11 of the 12 in the
    # layers: the last one feeds the classifier's 2-D Gemm) and every attention output.
    assert refined["inputs_centred"] == {"layernorm outputs": 12, "attention outputs": 6}
    # Every LayerNorm output a GEMM reads is rotated (384 channels: 6 blocks of 64), in place of
    # the outlier channel's split and the feed-forward inputs' fp32 channels.
    assert refined["hadamard_rotation_on_layernorm_outputs"] == {"block": 64}
    assert refined["inputs_rotated"] == 12
    assert refined["channels_split"] == []
    assert refined["inputs_with_fp32_channels"] == {"gelu outputs": 6}
    assert quant["activation_quantizer"].startswith("QuantizeLinear with one scale per row")
    assert quant["gelu"] == "tanh approximation (FastGelu)"
    assert manifest["labels"] == ["NEGATIVE", "POSITIVE"]
    assert manifest["max_length"] == 512
    assert manifest["graph_inputs"] == ["input_ids", "attention_mask"]
    assert manifest["batching"] == "padded"
    v = manifest["verification"]
    # Chosen on one part, reported on the other: the two parts are disjoint and cover the data.
    selection = v["selection"]
    assert selection["chosen"] == quant["recipe"]
    assert set(selection["candidates"]) == set(targets.TARGETS["x86-avx2"].recipes)
    assert 0 < selection["n"] < v["n"] and selection["n"] + v["n"] == 436
    assert v["failed"] == []
    assert v["agreement"] >= 0.985 and v["accuracy_drop_points"] <= 0.5
    invariance = v["batch_invariance"]
    assert invariance["label_flips"] == 0 and invariance["max_score_diff"] <= 1e-5
    assert {r["batch"] for r in invariance["runs"]} >= {2, 32, 64}
    assert {r["order"] for r in invariance["runs"]} == {"sorted", "shuffled"}
    assert "onnxruntime" in manifest["tools"]
    model_bytes = sum(manifest["files"][f]["bytes"] for f in ("model.onnx", "model.onnx.data"))
    assert model_bytes == manifest["sizes_bytes"]["artifact_model"]
    # int8 GEMM weights and an fp16 embedding table (docs/building.md, "Fidelity").
    assert model_bytes < manifest["sizes_bytes"]["fp32_source"] / 2


def test_verify_command_catches_a_changed_file(standin_built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    copy.mkdir()
    for p in standin_built.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    check_files(copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["id2label"]["0"] = "TAMPERED"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"config\.json sha256"):
        check_files(copy)


def test_a_cut_short_weights_file_is_refused_at_load_naming_it(
    standin_built: Path, tmp_path: Path
) -> None:
    from handler.loading import load_model

    copy = tmp_path / "m"
    copy.mkdir()
    for p in standin_built.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert load_model(copy, 1).classifier.predict("fine")[0]["label"] in ("POSITIVE", "NEGATIVE")
    weights = copy / "model.onnx.data"
    weights.write_bytes(weights.read_bytes()[:-4096])  # an interrupted copy
    with pytest.raises(ArtifactError, match=r"model\.onnx\.data is \d+ bytes, manifest says"):
        load_model(copy, 1)


@pytest.mark.parametrize("target", ["x86-vnni", "arm64", "none"])
def test_every_target_builds_and_classifies(
    target: str, standin_dir: Path, standin_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / target
    # verify_on="host": scoring the stand-in under qemu-aarch64 takes minutes; the emulated gate
    # is tested on the tiny model (tests/compiler/test_on_target.py).
    options = BuildOptions(
        model=str(standin_dir), target=target, out=out, eval_path=standin_data, verify_on="host"
    )
    manifest = build(options)
    assert manifest["target"]["name"] == target
    assert manifest["batching"] == "padded"
    selection = manifest["verification"]["selection"]
    if target != "none":  # chosen on the selection split: the lowest mean score difference
        figures = selection["candidates"]
        assert len(figures) == len(targets.TARGETS[target].recipes) >= 2
        assert selection["chosen"] == min(figures, key=lambda n: figures[n]["mean_score_diff"])
        # The GELU is computed as the manifest says: its tanh approximation (FastGelu).
        import onnx

        graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
        assert {n.op_type for n in graph.node if "Gelu" in n.op_type} == {"FastGelu"}
        assert manifest["quantization"]["gelu"] == "tanh approximation (FastGelu)"
        # The LayerNorm outputs are rotated (a [64, 64] MatMul each), whatever the weights'
        # bits: no split, no fp32 channels but the GELU outputs' (one small MatMul per layer).
        refinements = manifest["quantization"]["refinements"]
        fp32_matmuls = sum(n.op_type == "MatMul" for n in graph.node)
        layers = sum(n.op_type == "MultiHeadAttention" for n in graph.node)
        assert refinements.get("channels_split", []) == []
        assert refinements["inputs_with_fp32_channels"] == {"gelu outputs": layers}
        assert refinements["inputs_rotated"] == 2 * layers
        assert fp32_matmuls == 3 * layers
    clf = Classifier.from_dir(out)
    answers = clf.predict(
        [
            "A masterpiece: moving, funny and beautifully acted.",
            "A tedious, badly written waste of two hours.",
        ]
    )
    assert [a["label"] for a in answers] == ["POSITIVE", "NEGATIVE"]
    assert evaluate(clf, read_labelled(standin_data, clf.id2label))["accuracy"] > 0.86


def _damage(original: Any) -> Any:
    def damaged(src: Path, dst: Path, recipe: Any, *args: Any) -> dict[str, Any]:
        import onnx
        from onnx import numpy_helper

        result: dict[str, Any] = original(src, dst, recipe, *args)
        model = onnx.load(str(dst))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.int8 and arr.ndim == 2:  # the quantised MatMul weights
                flip = rng.random(arr.shape) < 0.3
                broken = np.where(flip, -arr, arr).astype(np.int8)
                init.CopyFrom(numpy_helper.from_array(broken, init.name))
        onnx.save(model, str(dst))
        return result

    return damaged


def test_gate_rejects_a_damaged_model_and_leaves_nothing(
    standin_dir: Path, standin_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(per_token, "quantize_file", _damage(per_token.quantize_file))
    out = tmp_path / "model"
    with pytest.raises(GateFailed, match="agreement") as info:
        build(
            BuildOptions(model=str(standin_dir), target="x86-avx2", out=out, eval_path=standin_data)
        )
    assert "verification failed" in str(info.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_cli_build_exits_non_zero_naming_the_measure(
    standin_dir: Path, standin_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "handler",
            "build",
            "--model",
            str(standin_dir),
            "--eval",
            str(standin_data),
            "--out",
            str(out),
            "--target",
            "x86-vnni",
            "--min-agreement",
            "1.01",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "agreement" in proc.stderr and "verification failed" in proc.stderr
    assert not out.exists()


PINNED = {
    # text: (label, fp32 POSITIVE score from the published fp32 graph)
    "A masterpiece: moving, funny and beautifully acted.": "POSITIVE",
    "A tedious, badly written waste of two hours.": "NEGATIVE",
    "it 's a charming and often affecting journey . ": "POSITIVE",
    "unflinchingly bleak and desperate ": "NEGATIVE",
}


def test_pinned_outputs(standin_built: Path) -> None:
    clf = Classifier.from_dir(standin_built)
    answers = clf.predict(list(PINNED))
    assert [a["label"] for a in answers] == list(PINNED.values())
    assert all(a["score"] > 0.9 for a in answers)
    # Two fixed scores: the int8 artifact stays within 0.02 of what it gave when written.
    first = clf.predict(next(iter(PINNED)), top_k=None)
    assert {d["label"]: round(d["score"], 2) for d in first}["POSITIVE"] == pytest.approx(
        0.99, abs=0.02
    )


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_token_ids_match_transformers(standin_built: Path, standin_dir: Path) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(standin_dir))
    ours = TextTokenizer.from_file(standin_built / "tokenizer.json", 512, 0)
    long = " ".join(["wonderful", "film", "naïve", "東京", "😀"] * 500)  # ~2,000+ tokens
    texts = [*VARIED, long]
    for text, enc in zip(texts, ours.encode(texts), strict=True):
        expected = theirs(text, truncation=True, max_length=512)["input_ids"]
        assert enc.ids == expected, text[:40]
    assert ours.encode([long])[0].truncated and len(ours.encode([long])[0].ids) == 512


@pytest.mark.skipif(not (HAS_TORCH and HAS_TRANSFORMERS), reason="torch/transformers not installed")
def test_fp32_graph_matches_pytorch(standin_dir: Path) -> None:
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(standin_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(standin_dir)).eval()
    sess = ort.InferenceSession(
        str(standin_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    batch = tok(VARIED, padding=True, truncation=True, return_tensors="np")
    onnx_logits = sess.run(
        ["logits"], {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    )[0]
    with torch.no_grad():
        torch_logits = model(
            **{k: torch.tensor(batch[k]) for k in ("input_ids", "attention_mask")}
        ).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)

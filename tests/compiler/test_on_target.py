"""An arm64 artifact built on x86-64 is verified on the target's arithmetic where qemu-aarch64 and
an arm64 Python (scripts/arm64_root.sh) are at hand, and the manifest says which CPU the figures
come from either way. Pins: the emulated child really runs aarch64 kernels (its machine), the
figures are the shipped artifact's, and a build that must verify on the target refuses at once
when it cannot."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.compiler import on_target
from handler.compiler.pipeline import BuildOptions, build
from handler.errors import BuildError
from handler.inference import Classifier
from tests import tiny

EMULATOR, WHY = on_target.find("arm64")
needs_emulator = pytest.mark.skipif(EMULATOR is None, reason=f"no emulated arm64 here: {WHY}")


def test_only_a_foreign_arm64_target_needs_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert on_target.find("x86-avx2")[0] is None
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    emulator, why = on_target.find("arm64")
    assert emulator is None and "itself" in why


def test_without_qemu_or_a_root_it_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "apt-get install qemu-user" in on_target.find("arm64")[1]
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setenv(on_target.ROOT_ENV, str(tmp_path / "empty"))
    emulator, why = on_target.find("arm64")
    assert emulator is None and "scripts/arm64_root.sh" in why


def test_verify_on_target_refuses_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(on_target.ROOT_ENV, str(tmp_path / "empty"))
    options = BuildOptions(model=str(tmp_path / "nothing-here"), target="arm64", verify_on="target")
    with pytest.raises(BuildError, match=r"cannot run arm64 here: .*arm64_root\.sh"):
        build(options)  # no model folder either: refused before it is looked for
    with pytest.raises(BuildError, match="verify_on must be one of"):
        build(BuildOptions(model=str(tmp_path), verify_on="everywhere"))


@pytest.mark.slow
@needs_emulator
def test_an_arm64_build_is_verified_on_an_emulated_graviton(tmp_path: Path) -> None:
    hub = tiny.make_hub_folder(tmp_path / "hub")
    out = tmp_path / "arm64"
    eval_tsv = tiny.write_eval(tmp_path / "eval.tsv")
    manifest = build(
        BuildOptions(
            model=str(hub), target="arm64", out=out, eval_path=eval_tsv, verify_on="target"
        )
    )
    v = manifest["verification"]
    where = v["computed_on"]
    assert where["describes_target"] is True and where["target_cpu"]["machine"] == "aarch64"
    assert where["target_cpu"]["qemu_cpu"] == "neoverse-n1" and where["parts"]["report"] == "target"
    assert v["batch_invariance"]["machine"] == "aarch64"  # computed in the emulated process
    inv = v["batch_invariance"]
    exact = inv["max_score_diff"] <= 1e-5
    same = inv["same_length"]  # equal-length batches, unpadded, on the target's kernels
    unpadded = same["max_score_diff"] == 0.0 and same["texts_batched"] > 0
    expected = "padded" if exact else ("same_length" if unpadded else "per_text")
    assert manifest["batching"] == expected
    assert v["unlabelled"]["n"] == 1500
    # The emulated scores are the shipped artifact's: labels as on this host, scores close.
    assert EMULATOR is not None
    texts = [line.split("\t")[0] for line in eval_tsv.read_text().splitlines()[1:]][:20]
    host = Classifier.from_dir(out)
    host_scores = host.answer(texts).scores
    target_scores = EMULATOR.scores(out, texts, None)
    assert target_scores.shape == host_scores.shape
    assert (target_scores.argmax(1) == host_scores.argmax(1)).all()
    assert float(np.abs(target_scores - host_scores).max()) < 2e-2


class FakeTarget:
    """An emulator stand-in that scores on this host and reports what a target whose kernels
    round padded rows differently would: the pipeline's response is what is pinned."""

    same_length_diff = 3e-4  # equal-length batches not exact either

    def scores(self, model_dir: Path, texts: list[str], function: str | None) -> Any:
        clf = Classifier.from_dir(model_dir)
        return clf.answer(texts, function_to_apply=function).scores

    def batch_invariance(self, model_dir: Path, texts: list[str]) -> dict[str, Any]:
        return {
            "n": 32,
            "batch_sizes": [8, 32],
            "max_score_diff": 6e-4,
            "label_flips": 0,
            "runs": [],
            "machine": "aarch64",
            "same_length": {"max_score_diff": self.same_length_diff, "texts_batched": 12},
        }

    def describe(self) -> dict[str, Any]:
        return {"cpu": "fake", "qemu_cpu": "neoverse-n1", "machine": "aarch64"}


def test_a_target_that_is_not_batch_invariant_is_served_one_text_per_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(on_target, "find", lambda target: (FakeTarget(), "fake qemu"))
    hub = tiny.make_hub_folder(tmp_path / "hub")
    out = tmp_path / "arm64"
    options = BuildOptions(
        model=str(hub), target="arm64", out=out, eval_path=tiny.write_eval(tmp_path / "e.tsv")
    )
    manifest = build(options)  # not refused: answered by serving each text alone
    inv = manifest["verification"]["batch_invariance"]
    assert (
        inv["padded_batches_on_target"] == "not invariant" and "one text per run" in inv["served"]
    )
    assert manifest["batching"] == "per_text"
    assert Classifier.from_dir(out).config.batching == "per_text"
    assert "batch_invariance" not in manifest["verification"]["failed"]


def test_a_broken_emulated_run_is_a_build_error_that_says_what_to_do(tmp_path: Path) -> None:
    broken = on_target.Emulator("false", tmp_path, tmp_path / "python3.11", tmp_path / "site")
    with pytest.raises(BuildError, match="--verify-on host"):
        broken.scores(tmp_path, ["a text"], None)


@pytest.mark.slow
@needs_emulator
def test_the_arm64_runtime_computes_fastgelu_as_the_tanh_gelu(tmp_path: Path) -> None:
    # The w8a8 artifacts (x86-vnni, arm64) compute their GELUs with onnxruntime's FastGelu
    # (targets.Refinements.tanh_gelu). Pins: the target's own onnxruntime (aarch64 wheel,
    # emulated Neoverse N1) has the kernel, with the bias input, and it computes
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) there, not erf's GELU.
    import math
    import os
    import subprocess

    from onnx import TensorProto, helper, numpy_helper

    assert EMULATOR is not None
    n = 1536
    bias = np.linspace(-1.0, 1.0, n).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("FastGelu", ["x", "b"], ["y"], domain="com.microsoft")],
        "fastgelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])],
        [numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    x = np.stack([np.linspace(-6.0, 6.0, n), np.linspace(3.0, -3.0, n)]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    child = (
        "import sys, numpy as np, onnxruntime as ort, platform\n"
        "d = sys.argv[1]\n"
        "s = ort.InferenceSession(d + '/m.onnx', providers=['CPUExecutionProvider'])\n"
        "np.save(d + '/y.npy', s.run(None, {'x': np.load(d + '/x.npy')})[0])\n"
        "print(platform.machine())\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(EMULATOR.site)}
    argv = [str(EMULATOR.qemu), "-cpu", on_target.CPU, "-L", str(EMULATOR.sysroot)]
    argv += [str(EMULATOR.python), "-c", child, str(tmp_path)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "aarch64", proc.stdout
    y = np.load(tmp_path / "y.npy").astype(np.float64)
    v = x.astype(np.float64) + bias
    tanh = 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
    erf = 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))
    np.testing.assert_allclose(y, tanh, atol=2e-6, rtol=2e-6)
    assert np.abs(y - erf).max() > 1e-4  # it is not erf's GELU (they differ by up to 4.7e-4)


class ExactUnpaddedTarget(FakeTarget):
    """Padded rows differ on it, rows of equal length batched unpadded do not (Neoverse N1)."""

    same_length_diff = 0.0


def test_a_target_exact_without_padding_batches_texts_of_equal_length(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(on_target, "find", lambda target: (ExactUnpaddedTarget(), "fake qemu"))
    hub = tiny.make_hub_folder(tmp_path / "hub")
    out = tmp_path / "arm64"
    eval_tsv = tiny.write_eval(tmp_path / "e.tsv")
    manifest = build(BuildOptions(model=str(hub), target="arm64", out=out, eval_path=eval_tsv))
    inv = manifest["verification"]["batch_invariance"]
    assert (
        inv["padded_batches_on_target"] == "not invariant" and "equal token length" in inv["served"]
    )
    assert manifest["batching"] == "same_length"
    clf = Classifier.from_dir(out)
    assert clf.config.batching == "same_length"
    # Served so: every run holds texts of one token length, and answers are each text's own.
    texts = [line.split("\t")[0] for line in eval_tsv.read_text().splitlines()[1:]][:24]
    seen: list[list[int]] = []
    real = clf.logits

    def spy(batch: Any) -> Any:
        seen.append([e.length for e in batch])
        return real(batch)

    clf.logits = spy  # type: ignore[method-assign]
    together = clf.predict(texts)
    assert all(len(set(lengths)) == 1 for lengths in seen) and any(len(b) > 1 for b in seen)
    assert together == [clf.predict(t)[0] for t in texts]

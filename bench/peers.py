"""Peers: the project's int8 artifacts against the other ways to serve the same classifier on a
CPU, in one run: onnxruntime `quantize_dynamic` (per-channel), CTranslate2 int8, OpenVINO int8
(nncf static, SmoothQuant), optimum's int8 and transformers' PyTorch pipeline.

    scripts/peers_env.sh                                      # .venv-peers: the peers from PyPI
    python bench/peers.py [--sizes stand-in,distilbert-base] [--rounds 5] [--texts 300] [--out DIR]

One thread everywhere. Every contender runs in a persistent worker process of its own and
includes tokenisation and softmax. Rounds interleave the workers in a rotating order, so the
machine's drift hits all alike; figures are medians over rounds. Measured per contender: one
short text (p50 of 30 calls per round), texts/s over the first `--texts` SST-2 validation
sentences with the contender's best batching (length-sorted micro-batches of 1, 8 or 32, the
fastest chosen in a first pass; the project batches inside `Classifier.predict`), cold start (a
fresh process until its first answer: imports, load, one text) and peak RSS. For the project it
also times the artifact's int8 GEMMs alone (every MatMulIntegerToFloat of one short text, fed
the operands the real run gave them): one text over that floor says what the rest of the graph
costs. The peers' artifacts are made once under `--out` (CTranslate2 conversion, nncf
calibration on SST-2 half a, optimum's quantiser). The project runs in this interpreter's
environment; the peers in PEERS_PYTHON (default `.venv-peers/bin/python`), because optimum pins
an older transformers than the project's tests use. Without it the peers are skipped and the
table says so. DistilBERT-base size has random weights: speed and memory only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    EVAL_A,
    RESULTS,
    SHORT,
    STANDIN,
    built,
    pct,
    peak_rss_mib,
    random_distilbert,
    save,
    sentences,
    table,
)

PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))
BATCHES = (1, 8, 32)
CALIBRATION_TEXTS = 300
# (name, kind, which interpreter): "self" is this one, "peers" is PEERS_PYTHON.
CONTENDERS = (
    ("project x86-avx2 (default)", "project:x86-avx2", "self"),
    ("project x86-vnni", "project:x86-vnni", "self"),
    ("onnxruntime quantize_dynamic", "ort_dynamic", "peers"),
    ("CTranslate2 int8", "ct2", "peers"),
    ("OpenVINO int8 (nncf)", "openvino", "peers"),
    ("optimum int8", "optimum", "peers"),
    ("transformers pipeline (fp32)", "pipeline", "peers"),
)


# -- the host ---------------------------------------------------------------------------------


def cpu() -> dict[str, Any]:
    """The CPU's model and the flags that decide int8 kernels."""
    model, flags = "unknown", set[str]()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return {
        "model": model,
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }


def vnni(host: dict[str, Any]) -> bool:
    return bool(host["avx512_vnni"] or host["avx_vnni"])


def ort_kernels(host: dict[str, Any]) -> str:
    """Which int8 GEMM kernel onnxruntime's MLAS dispatches to on this CPU (it chooses by CPUID;
    an AMX-masked run has amx_int8 in the flags but no permission, and falls back to VNNI)."""
    if host["amx_int8"] and "no_amx" not in host["ld_preload"]:
        return "MLAS AMX"
    if host["avx512_vnni"]:
        return "MLAS AVX-512 VNNI"
    if host["avx_vnni"]:
        return "MLAS AVX-VNNI"
    return "MLAS AVX2 (u8s8 VPMADDUBSW)"


# -- artifacts ----------------------------------------------------------------------------------


def make_project(src: Path, out: Path, target: str) -> Path:
    """The project's artifact of `src` for `target` (made once); random weights are gated on
    nothing (their accuracy means nothing)."""
    if target == "x86-avx2":
        return built(src, out, src != STANDIN)
    from handler.compiler.gate import Gate
    from handler.compiler.pipeline import BuildOptions, build

    if not (out / "manifest.json").is_file():
        gate = Gate() if src == STANDIN else Gate(max_accuracy_drop=100.0, min_agreement=0.0)
        build(BuildOptions(model=str(src), target=target, out=out, eval_path=EVAL_A, gate=gate))
    return out


def calibration_texts() -> list[str]:
    lines = EVAL_A.read_text().splitlines()[1:]
    return [ln.rsplit("\t", 1)[0] for ln in lines if ln.strip()][:CALIBRATION_TEXTS]


def make_peers(src: Path, out: Path, use_vnni: bool) -> dict[str, str]:
    """In PEERS_PYTHON: each peer's artifact made once (reused when present)."""
    import numpy as np

    made: dict[str, str] = {}
    ct2 = out / "ct2-int8"
    if not (ct2 / "model.bin").is_file():
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(str(src)).convert(str(ct2), quantization="int8", force=True)
    made["ct2"] = str(ct2)

    ov_xml = out / "openvino-int8" / "model.xml"
    if not ov_xml.is_file():
        import nncf
        import openvino as ov
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(src / "tokenizer.json"))

        def feed(text: str) -> dict[str, Any]:
            ids = tok.encode(text).ids[:512]
            return {
                "input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            }

        texts = calibration_texts()
        model = ov.Core().read_model(str(src / "onnx" / "model.onnx"))
        quantized = nncf.quantize(
            model,
            nncf.Dataset(texts, feed),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(texts),
        )
        ov.save_model(quantized, str(ov_xml))
    made["openvino"] = str(ov_xml)

    opt = out / "optimum-int8"
    if not (opt / "model_quantized.onnx").is_file():
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        stage = out / "optimum-fp32"
        stage.mkdir(parents=True, exist_ok=True)
        for name in _HF_FILES:
            shutil.copy(src / name, stage / name)
        shutil.copy(src / "onnx" / "model.onnx", stage / "model.onnx")
        preset = AutoQuantizationConfig.avx512_vnni if use_vnni else AutoQuantizationConfig.avx2
        ORTQuantizer.from_pretrained(str(stage), file_name="model.onnx").quantize(
            save_dir=str(opt), quantization_config=preset(is_static=False, per_channel=False)
        )
    made["optimum"] = str(opt)

    dyn = out / "ort-dynamic" / "model.onnx"
    if not dyn.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers.optimizer import optimize_model

        dyn.parent.mkdir(parents=True, exist_ok=True)
        fused = dyn.with_name("fused.onnx")
        optimize_model(str(src / "onnx" / "model.onnx"), model_type="bert").save_model_to_file(
            str(fused)
        )
        import onnx

        quantize_dynamic(
            fused,
            dyn,
            per_channel=True,
            reduce_range=not use_vnni,
            weight_type=QuantType.QInt8,
            # The fused graph's com.microsoft nodes defeat shape inference: say weights are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    made["ort_dynamic"] = str(dyn)
    return made


_HF_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


# -- workers: each contender as `predict(texts) -> labels` ---------------------------------------


def _softmax_labels(logits: Any, id2label: dict[int, str]) -> list[dict[str, Any]]:
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    best = p.argmax(axis=-1)
    return [{"label": id2label[int(b)], "score": float(p[i, b])} for i, b in enumerate(best)]


def _id2label(src: Path) -> dict[int, str]:
    config = json.loads((src / "config.json").read_text())
    return {int(k): v for k, v in config["id2label"].items()}


def _padded(tok: Any, texts: Sequence[str]) -> tuple[Any, Any]:
    import numpy as np

    encs = tok.encode_batch(list(texts)) if len(texts) > 1 else [tok.encode(texts[0])]
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def _tokenizer(src: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=512)
    return tok


def load(kind: str, src: Path, artifact: str) -> tuple[Callable[[Sequence[str]], Any], str]:
    """(predict, kernels used where the contender can tell) for one contender, 1 thread."""
    if kind.startswith("project:"):
        from handler.inference import Classifier

        clf = Classifier.from_dir(artifact, threads=1)
        return clf.predict, ort_kernels(cpu())
    id2label = _id2label(src)
    if kind == "ort_dynamic":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(artifact, opts, providers=["CPUExecutionProvider"])
        tok = _tokenizer(src)
        names = [i.name for i in sess.get_inputs()]

        def ort_predict(texts: Sequence[str]) -> Any:
            ids, mask = _padded(tok, texts)
            feed = {"input_ids": ids, "attention_mask": mask}
            return _softmax_labels(sess.run(None, {n: feed[n] for n in names})[0], id2label)

        return ort_predict, ort_kernels(cpu())
    if kind == "ct2":
        import ctranslate2
        import numpy as np
        from safetensors.numpy import load_file

        with _stderr_lines() as log:  # CT2_VERBOSE=1 logs the ISA it selected to stderr
            enc = ctranslate2.Encoder(artifact, device="cpu", compute_type="int8", intra_threads=1)
        weights = load_file(str(src / "model.safetensors"))
        w1, b1 = weights["pre_classifier.weight"], weights["pre_classifier.bias"]
        w2, b2 = weights["classifier.weight"], weights["classifier.bias"]
        tok = _tokenizer(src)

        def ct2_predict(texts: Sequence[str]) -> Any:
            encs = tok.encode_batch(list(texts)) if len(texts) > 1 else [tok.encode(texts[0])]
            out = enc.forward_batch([e.ids for e in encs])
            cls = np.asarray(out.last_hidden_state)[:, 0]  # DistilBERT's head reads [CLS]
            hidden = np.maximum(cls @ w1.T + b1, 0.0)
            return _softmax_labels(hidden @ w2.T + b2, id2label)

        isa = next((ln.split("ISA:")[-1].strip() for ln in log if "ISA" in ln), "?")
        return ct2_predict, f"CTranslate2 {ctranslate2.__version__}, ISA {isa}"
    if kind == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            artifact,
            "CPU",
            {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"},
        )
        request = compiled.create_infer_request()
        tok = _tokenizer(src)

        def ov_predict(texts: Sequence[str]) -> Any:
            ids, mask = _padded(tok, texts)
            out = request.infer({"input_ids": ids, "attention_mask": mask})
            return _softmax_labels(next(iter(out.values())), id2label)

        return ov_predict, "OpenVINO " + _ov_kernels(compiled)
    if kind in ("optimum", "pipeline"):
        import torch
        from transformers import AutoTokenizer, pipeline

        torch.set_num_threads(1)
        if kind == "optimum":
            import onnxruntime as ort
            from optimum.onnxruntime import ORTModelForSequenceClassification

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            model: Any = ORTModelForSequenceClassification.from_pretrained(
                artifact, file_name="model_quantized.onnx", session_options=opts
            )
            kernels = ort_kernels(cpu())
        else:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(src))
            kernels = (
                f"PyTorch {torch.__version__} fp32 ({torch.backends.cpu.get_cpu_capability()})"
            )
        pipe = pipeline(
            "text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(str(src))
        )

        def pipe_predict(texts: Sequence[str]) -> Any:
            return pipe(list(texts), batch_size=len(texts), truncation=True)

        return pipe_predict, kernels
    raise ValueError(f"unknown contender {kind!r}")


@contextlib.contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Lines a native library writes to file descriptor 2 inside the block."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def _ov_kernels(compiled: Any) -> str:
    """The primitive types OpenVINO's CPU plugin chose for its FullyConnected (GEMM) nodes."""
    kinds: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and "FullyConnected" in str(info["layerType"].value):
            kind = str(info["primitiveType"].value) if "primitiveType" in info else "?"
            kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "?"


def gemm_floor(artifact: Path) -> float:
    """Seconds per call of the artifact's integer GEMMs alone for one short text: every
    MatMulIntegerToFloat in a graph of its own, fed the operands the full run gave it."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from handler.inference import Classifier

    clf = Classifier.from_dir(artifact, threads=1)
    feed = clf.tokenizer.pad(clf.encode([SHORT]), clf.input_names)
    model = onnx.load(str(artifact / clf.config.model_file))
    inits = {t.name for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    live = sorted({i for n in gemms for i in n.input if i and i not in inits})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in live)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    values = dict(zip(live, sess.run(live, feed), strict=True))
    used = {i for n in gemms for i in n.input if i in inits}
    alone = helper.make_graph(
        gemms,
        "gemms",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in values.items()
        ],
        [helper.make_empty_tensor_value_info(o) for n in gemms for o in n.output],
        [t for t in model.graph.initializer if t.name in used],
    )
    only = helper.make_model(alone, opset_imports=list(model.opset_import))
    only.ir_version = model.ir_version
    sess = ort.InferenceSession(only.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(20):
        sess.run(None, values)
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        sess.run(None, values)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def worker(spec: dict[str, Any]) -> int:
    """A persistent contender: loads, answers one text (cold start ends there), then serves
    commands from stdin, one JSON per line."""
    predict, kernels = load(spec["kind"], Path(spec["src"]), spec["artifact"])
    predict([SHORT])
    print("READY " + json.dumps({"kernels": kernels}), flush=True)
    texts: list[str] = spec["texts"]
    by_length = sorted(texts, key=len)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "one":
            for _ in range(5):
                predict([SHORT])
            samples = []
            for _ in range(cmd["reps"]):
                t = time.perf_counter()
                predict([SHORT])
                samples.append(time.perf_counter() - t)
            result: Any = pct(samples, 0.5)
        elif cmd["cmd"] == "many":
            b = cmd["batch"]
            t = time.perf_counter()
            if b == 0:  # the contender batches itself
                predict(texts)
            else:
                for s in range(0, len(by_length), b):
                    predict(by_length[s : s + b])
            result = time.perf_counter() - t
        elif cmd["cmd"] == "rss":
            result = peak_rss_mib()
        else:
            return 0
        print("JSON " + json.dumps(result), flush=True)
    return 0


class Worker:
    def __init__(self, python: Path, spec: dict[str, Any]) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CT2_VERBOSE": "1",
        }
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        ready = self._line("READY ")
        self.cold_s = time.perf_counter() - started
        self.kernels = json.loads(ready)["kernels"]

    def _line(self, tag: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag) :]
        raise RuntimeError(f"worker exited ({self.proc.wait()}) before {tag.strip()}")

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line("JSON "))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def measure_size(
    size: str,
    src: Path,
    out: Path,
    rounds: int,
    texts: list[str],
    host: dict[str, Any],
    targets: Sequence[str],
) -> dict[str, Any]:
    artifacts: dict[str, str] = {}
    for target in targets:
        artifacts[f"project:{target}"] = str(make_project(src, out / f"{size}-{target}", target))
    peers_ok = PEERS_PYTHON.is_file()
    skipped = None if peers_ok else f"no {PEERS_PYTHON} (scripts/peers_env.sh makes it)"
    if peers_ok:
        spec = {"src": str(src), "out": str(out / f"{size}-peers"), "vnni": vnni(host)}
        made = subprocess.run(
            [str(PEERS_PYTHON), str(Path(__file__).resolve()), "--make", json.dumps(spec)],
            capture_output=True,
            text=True,
        )
        if made.returncode:
            skipped = "making the peers' artifacts failed: " + made.stderr.strip()[-400:]
        else:
            artifacts.update(json.loads(made.stdout.strip().splitlines()[-1]))
    contenders = [
        (name, kind, Path(sys.executable) if where == "self" else PEERS_PYTHON)
        for name, kind, where in CONTENDERS
        if (where == "self" and kind in artifacts) or (where == "peers" and skipped is None)
    ]
    workers: dict[str, Worker] = {}
    kinds: dict[str, str] = {}
    for name, kind, python in contenders:
        spec = {"kind": kind, "src": str(src), "artifact": artifacts.get(kind, ""), "texts": texts}
        workers[name] = Worker(python, spec)
        kinds[name] = kind
    # The best batching of each contender, from one pass at each size (the project's own: 0).
    batch: dict[str, int] = {}
    for name, w in workers.items():
        if kinds[name].startswith("project:"):
            batch[name] = 0
        else:
            passes = {b: w.ask(cmd="many", batch=b) for b in BATCHES}
            batch[name] = min(passes, key=passes.__getitem__)
    one: dict[str, list[float]] = {n: [] for n in workers}
    many: dict[str, list[float]] = {n: [] for n in workers}
    names = list(workers)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            one[name].append(workers[name].ask(cmd="one", reps=30))
            many[name].append(workers[name].ask(cmd="many", batch=batch[name]))
    result: dict[str, Any] = {"skipped_peers": skipped, "contenders": {}}
    for name, w in workers.items():
        result["contenders"][name] = {
            "one_text_ms": round(statistics.median(one[name]) * 1000, 3),
            "texts_per_s": round(len(texts) / statistics.median(many[name]), 1),
            "batch": batch[name] or "own (length-sorted, 8)",
            "cold_start_s": round(w.cold_s, 2),
            "peak_rss_mib": w.ask(cmd="rss"),
            "kernels": w.kernels,
        }
        w.close()
    # Cold start once more, each in a fresh process after the others are gone (less contention).
    for name, kind, python in contenders:
        spec = {"kind": kind, "src": str(src), "artifact": artifacts.get(kind, ""), "texts": []}
        fresh = Worker(python, spec)
        result["contenders"][name]["cold_start_s"] = round(
            min(result["contenders"][name]["cold_start_s"], fresh.cold_s), 2
        )
        fresh.close()
    for target in targets:
        floor = gemm_floor(Path(artifacts[f"project:{target}"]))
        entry = next(v for n, v in result["contenders"].items() if target in n)
        entry["int8_gemms_alone_ms"] = round(floor * 1000, 3)
        entry["one_text_over_gemms"] = round(entry["one_text_ms"] / (floor * 1000), 2)
    return result


def render(result: dict[str, Any]) -> str:
    host = result["cpu"]
    flags = ", ".join(f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if host[f])
    parts = [
        f"CPU: {host['model']} ({flags}){' LD_PRELOAD=' + host['ld_preload'] if host['ld_preload'] else ''}"
    ]
    for size, res in result["sizes"].items():
        rows = []
        best_peer_one = min(
            (v["one_text_ms"] for n, v in res["contenders"].items() if not n.startswith("project")),
            default=None,
        )
        best_peer_tps = max(
            (v["texts_per_s"] for n, v in res["contenders"].items() if not n.startswith("project")),
            default=None,
        )
        for name, v in res["contenders"].items():
            rows.append(
                [
                    name,
                    v["one_text_ms"],
                    v["texts_per_s"],
                    v["batch"],
                    v["cold_start_s"],
                    v["peak_rss_mib"],
                    v.get("one_text_over_gemms", ""),
                    v["kernels"],
                ]
            )
        parts.append(f"\n{size} ({result['texts']} SST-2 texts, {result['rounds']} rounds)")
        parts.append(
            table(
                [
                    "contender",
                    "one text p50 ms",
                    "texts/s",
                    "batch",
                    "cold start s",
                    "peak RSS MiB",
                    "one text / int8 GEMMs",
                    "kernels",
                ],
                rows,
            )
        )
        if res["skipped_peers"]:
            parts.append(f"peers skipped: {res['skipped_peers']}")
        elif best_peer_one is not None and best_peer_tps is not None:
            d = res["contenders"]["project x86-avx2 (default)"]
            parts.append(
                f"default vs best peer: one text {d['one_text_ms'] / best_peer_one:.2f}x the "
                f"fastest peer's time; throughput {d['texts_per_s'] / best_peer_tps:.2f}x the "
                f"best peer's; one text {d['one_text_over_gemms']}x its int8 GEMMs alone"
            )
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS / "peers"))
    parser.add_argument("--sizes", default="stand-in,distilbert-base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument(
        "--targets", default="x86-avx2,x86-vnni", help="the project's targets to measure"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--make", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.make:
        spec = json.loads(args.make)
        print(json.dumps(make_peers(Path(spec["src"]), Path(spec["out"]), spec["vnni"])))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "stand-in": STANDIN,
        "distilbert-base": random_distilbert(out, "distilbert-base-random"),
    }
    texts = sentences()[: args.texts]
    host = cpu()
    result: dict[str, Any] = {"cpu": host, "rounds": args.rounds, "texts": len(texts), "sizes": {}}
    for size in args.sizes.split(","):
        result["sizes"][size] = measure_size(
            size, sources[size], out, args.rounds, texts, host, args.targets.split(",")
        )
    save(out, "peers.json", result)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

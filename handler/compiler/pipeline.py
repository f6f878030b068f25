"""The build: fetch -> fp32 ONNX -> fuse -> quantise -> offline-optimise -> gate -> manifest.

The artifact is assembled in a temporary folder beside the output and renamed into place only
after the gate passes, so a failed build leaves nothing that looks usable.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from handler import manifest
from handler.compiler import (
    agreement,
    attention,
    calibrate,
    export,
    fusion,
    gate,
    on_target,
    per_token,
    progress,
    read_token,
    recorded,
    saving,
    targets,
)
from handler.compiler.fetch import DEFAULT_MODEL, SnapshotDownload, fetch
from handler.compiler.inputs import load_eval, model_config
from handler.datafiles import read_texts
from handler.errors import BuildError
from handler.inference.classifier import RUNTIME_CONFIG, Classifier, ModelConfig
from handler.inference.postprocess import task_of
from handler.inference.session import create_session
from handler.inference.tokenizer import TextInput, TextTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    model: str = DEFAULT_MODEL
    revision: str | None = None
    target: str = targets.DEFAULT_TARGET
    out: Path = Path("build/model")
    eval_path: Path | None = None
    threads: int = 1
    gate: gate.Gate = field(default_factory=gate.Gate)
    # Unlabelled text for agreement with fp32 off the labelled set's domain (None: the default).
    agreement_text: Path | None = None
    agreement_gate: agreement.AgreementGate = field(default_factory=agreement.AgreementGate)
    # Where the gate scores an artifact for another CPU: "auto" (emulated when it can be),
    # "target" (emulated, or the build fails), "host" (this machine's kernels).
    verify_on: str = "auto"
    # How closely int8 follows fp32 against speed: targets.FIDELITY ("balanced", "high").
    fidelity: str = targets.DEFAULT_FIDELITY


def _session_ms(path: Path, pre_optimized: bool, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        create_session(path, 1, pre_optimized)
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def _candidate(
    fused: Path,
    work: Path,
    recipe_name: str,
    evaluate_exact: bool,
    calibration: Any = None,
    refine: targets.Refinements = targets.REFINEMENTS,
) -> tuple[Path, Path, dict[str, Any]]:
    """(graph to ship, graph to evaluate, quantisation record) for one per-token recipe.

    On a build host whose u8s8 sums saturate (x86-64 without VNNI), a recipe that is exact only
    on the target's CPU is evaluated through its exact twin: the same integers as u8u8, which
    no CPU saturates; the shipped graph is the u8s8 one.
    """
    recipe = targets.RECIPES[recipe_name]
    raw = work / f"{recipe_name}.raw.onnx"
    quant = per_token.quantize_file(fused, raw, recipe, calibration, refine)
    shipped = work / f"{recipe_name}.onnx"
    saving.optimize_offline(raw, shipped)
    evaluated = shipped
    if evaluate_exact and not recipe.avx2_safe:
        evaluated = work / f"{recipe_name}.twin.onnx"
        per_token.exact_twin_file(shipped, evaluated)
        quant["evaluated_as"] = "exact twin (u8u8): this build host's u8s8 sums saturate"
    return shipped, evaluated, quant


def _classifier(graph: Path, tokenizer: Path, config: ModelConfig, threads: int) -> Classifier:
    return Classifier(
        create_session(graph, threads, config.pre_optimized),
        TextTokenizer.from_file(tokenizer, config.max_length, config.pad_token_id),
        config,
    )


def build(
    options: BuildOptions, snapshot_download: SnapshotDownload | None = None
) -> dict[str, Any]:
    target = targets.get_target(options.target)
    if options.fidelity not in targets.FIDELITY:
        raise BuildError(f"fidelity must be one of {', '.join(targets.FIDELITY)}")
    if options.verify_on not in on_target.MODES:
        raise BuildError(f"verify_on must be one of {', '.join(on_target.MODES)}")
    emulator, why = (
        on_target.find(target.name)
        if options.verify_on != "host"
        else (None, "the build was asked to verify on the host (--verify-on host)")
    )
    if (
        emulator is None
        and options.verify_on == "target"
        and target.name == "arm64"
        and not on_target.host_is_arm64()
    ):
        raise BuildError(f"--verify-on target: cannot run arm64 here: {why}")
    started = time.perf_counter()
    # fetch, eval data, fuse, one per recipe (or fp32), verify, write
    stages = progress.bar(5 + max(1, len(target.recipes)), "build", unit="stage")
    stages.set_postfix_str("fetch")
    source = fetch(options.model, options.revision, snapshot_download)
    stages.update()
    config, hf_config, length_from = model_config(source)
    config = replace(config, batching="padded")
    out = options.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out.parent) as tmp_name:
        work = Path(tmp_name) / "work"
        stage = Path(tmp_name) / "artifact"
        work.mkdir()
        stage.mkdir()
        fp32 = source.onnx_path
        origin = "published onnx/model.onnx"
        if fp32 is None:
            stages.total += 1
            stages.set_postfix_str("export from PyTorch weights")
            fp32 = work / "exported.onnx"
            export.export_onnx(source.folder, fp32)
            origin = "exported from PyTorch weights"
            stages.update()
        stages.set_postfix_str("verification data")
        task = task_of(config.problem_type, len(config.id2label))
        function = gate.gate_function(task)
        data, eval_source = load_eval(options.eval_path, dict(config.id2label), work, task)
        selection, held_out = gate.split(data)
        stages.update()

        stages.set_postfix_str("fuse")
        fused = work / "fused.onnx"
        fusions = fusion.fuse_transformer(fp32, work / "fused-ln.onnx", hf_config)
        heads = attention.fuse_attention(work / "fused-ln.onnx", work / "fused-mha.onnx", hf_config)
        if heads:
            fusions["MultiHeadAttention"] = heads
        moved = read_token.prune_rows(work / "fused-mha.onnx", fused, hf_config)
        if moved:
            fusions["last_layer_on_selected_token"] = moved
        stages.update()

        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(source.folder / "tokenizer.json"))
        tok.enable_truncation(max_length=config.max_length, stride=0, strategy="longest_first")
        tok.no_padding()
        tokenizer_file = stage / "tokenizer.json"
        tok.save(str(tokenizer_file))
        reference = _classifier(fp32, tokenizer_file, config, options.threads)
        evaluate_exact = targets.host_saturates()

        # Choose the recipe on the selection split only.
        candidates: dict[str, tuple[Path, Path, dict[str, Any]]] = {}
        selection_figures: dict[str, dict[str, Any]] = {}
        ref_selection = gate.scores(
            reference, selection.texts, "fp32 on the selection part", function
        )
        calibration = None
        if target.quantize:
            stages.set_postfix_str("calibrate")
            calibration = calibrate.collect(
                fused,
                TextTokenizer.from_file(tokenizer_file, config.max_length, config.pad_token_id),
                [*selection.texts, *agreement.calibration_texts()[0]],
            )
        for name in target.recipes:
            stages.set_postfix_str(f"quantise and score recipe {name}")
            candidates[name] = _candidate(
                fused,
                work,
                name,
                evaluate_exact,
                calibration,
                targets.FIDELITY[options.fidelity],
            )
            clf = _classifier(
                candidates[name][1], tokenizer_file, replace(config, pre_optimized=True), 1
            )
            figures = gate.compare(
                ref_selection,
                gate.scores(clf, selection.texts, name, function),
                selection.labels,
                task,
            )
            selection_figures[name] = figures
            stages.update()
        if target.quantize:
            # Mean score difference, not agreement or accuracy: on a few hundred texts those
            # move by whole texts near the boundary; the mean difference weighs every text.
            # The gate itself is applied once, on the report split.
            chosen = min(target.recipes, key=lambda n: selection_figures[n]["mean_score_diff"])
            shipped, evaluated, quant = candidates[chosen]
        else:
            stages.set_postfix_str("optimise fp32")
            saving.optimize_offline(fused, work / "fp32.onnx")
            chosen, shipped, quant = "fp32", work / "fp32.onnx", {"method": "none"}
            evaluated = shipped
            stages.update()
        config = replace(config, pre_optimized=True)
        graph_files = saving.save_for_loading(shipped, stage / config.model_file)
        (stage / RUNTIME_CONFIG).write_text(json.dumps(config.to_json(), indent=2) + "\n")

        # The gate's figures, on text the choice never saw.
        if evaluated == shipped:
            candidate = Classifier.from_dir(stage, threads=options.threads)
        else:
            candidate = _classifier(evaluated, tokenizer_file, config, options.threads)
        where = f", on an emulated {on_target.CPU}" if emulator else ""
        stages.set_postfix_str(f"verify on {len(held_out.texts)} report texts{where}")
        if emulator is not None:
            log.info("scoring the report and unlabelled texts under %s (slow: ~100x)", why)
        report = gate.report(
            reference, candidate, held_out, options.gate, task, on_target=emulator, artifact=stage
        )
        if emulator is not None and "batch_invariance" in report["failed"]:
            # The target's kernels round a text differently when padding lengthens it (arm64:
            # onnxruntime's MultiHeadAttention on an emulated Neoverse N1, 1 ULP in the logits,
            # amplified by per-token rounding). Texts of equal token length, never padded, are
            # exact there: served so ("same_length") when the target says they are; else one
            # text per run. Either way no answer depends on its batch-mates.
            same = report["batch_invariance"].get("same_length", {})
            exact_unpadded = (
                same.get("max_score_diff", 1.0) == 0.0 and same.get("texts_batched", 0) > 0
            )
            config = replace(config, batching="same_length" if exact_unpadded else "per_text")
            (stage / RUNTIME_CONFIG).write_text(json.dumps(config.to_json(), indent=2) + "\n")
            report["batch_invariance"]["padded_batches_on_target"] = "not invariant"
            report["batch_invariance"]["served"] = (
                "texts of equal token length batched together, never padded (config.json "
                "batching: same_length): padded batches change scores on the target, "
                "equal-length batches do not"
                if exact_unpadded
                else "one text per run (config.json batching: per_text): padded batches change "
                "scores on the target, so the runtime does not batch this artifact"
            )
            report["failed"] = [f for f in report["failed"] if f != "batch_invariance"]
            log.warning(
                "on the target, padded batches change scores by up to %.2g: this artifact is "
                "served %s (batching: %s)",
                report["batch_invariance"]["max_score_diff"],
                "in unpadded equal-length batches" if exact_unpadded else "one text per run",
                config.batching,
            )
        stages.update()
        texts: list[TextInput]
        if options.agreement_text is not None:
            texts = read_texts(options.agreement_text)
            texts_source = str(options.agreement_text)
        else:
            defaults, texts_source = agreement.default_texts()
            texts = list(defaults)
        unlabelled = agreement.measure(
            gate.scores(reference, texts, "fp32 on unlabelled text", function),
            emulator.scores(stage, texts, function)
            if emulator is not None
            else gate.scores(candidate, texts, "int8 on unlabelled text", function),
            task,
        )
        unlabelled["source"] = texts_source
        unlabelled["gate"] = {
            "min_agreement": options.agreement_gate.min_agreement,
            "max_p99_score_diff": options.agreement_gate.max_p99_score_diff,
        }
        unlabelled_failed = agreement.failures(unlabelled, options.agreement_gate)
        report["unlabelled"] = unlabelled
        report["failed"] = report["failed"] + unlabelled_failed
        report["computed_on"] = on_target.computed_on(target, quant, evaluate_exact, emulator, why)
        if not report["computed_on"]["describes_target"]:
            log.warning("%s", report["computed_on"]["note"])
        stages.set_postfix_str("write")
        report["eval_source"] = eval_source
        report["selection"] = {
            "n": len(selection.texts),
            "chosen": chosen,
            "candidates": selection_figures,
            "rule": "the recipe with the lowest mean score difference from fp32 here; the "
            "gate is applied to the report split, which the choice never saw",
        }
        gate.check(report)

        inputs = [i.name for i in candidate.session.get_inputs()]
        content = {
            "format": 2,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "model": source.model,
                "kind": source.kind,
                "revision": source.revision,
                "onnx": origin,
                "architectures": hf_config.get("architectures"),
                "model_type": hf_config.get("model_type"),
            },
            "target": {"name": target.name, "description": target.description},
            "quantization": quant,
            "fusions": fusions,
            "labels": [config.id2label[i] for i in sorted(config.id2label)],
            "problem_type": config.problem_type,
            "task": task,
            "max_length": config.max_length,
            "max_length_from": length_from,
            "graph_inputs": inputs,
            "batching": config.batching,
            "max_batch_size": config.max_batch_size,
            "session_creation_ms": {
                "pre_optimized_opt_off": _session_ms(stage / config.model_file, True),
            },
            "sizes_bytes": {
                "fp32_source": fp32.stat().st_size,
                "artifact_model": sum(f.stat().st_size for f in graph_files),
            },
            "verification": report,
            # What the deploy's pre-traffic check asks a new version (handler/pre_traffic.py).
            "recorded_answers": recorded.record(candidate, held_out.texts, task),
            "tools": manifest.tool_versions(),
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        del candidate, reference
        result = manifest.write(stage, content)
        if out.exists():
            old = Path(tmp_name) / "previous"
            out.rename(old)
        stage.rename(out)
    stages.update()
    stages.close()
    return result


def summary(manifest: dict[str, Any], out: Path | str) -> dict[str, Any]:
    """What `python -m handler build` prints: the verification's figures from the manifest."""
    v = manifest["verification"]
    figures = (
        ("reference_mae", "candidate_mae", "mean_score_diff", "max_score_diff")
        if v.get("task") == "regression"
        else ("reference_accuracy", "candidate_accuracy", "accuracy_drop_points", "agreement")
    )
    return {
        "out": str(Path(out).resolve()),
        "target": manifest["target"]["name"],
        "task": v.get("task"),
        **{name: v[name] for name in figures},
        "n": v["n"],
        "recipe": manifest["quantization"].get("recipe", "fp32"),
        "chosen_on": {"n": v["selection"]["n"], "rule": v["selection"]["rule"]},
        "batch_invariance": {
            k: v["batch_invariance"][k] for k in ("max_score_diff", "label_flips", "batch_sizes")
        },
        "unlabelled": {
            k: v["unlabelled"][k]
            for k in ("source", "n", "agreement", "flips", "score_diff")
            if k in v["unlabelled"]
        },
        "figures_computed_on": {
            "cpu": v["computed_on"]["host"]["cpu"],
            "arithmetic": v["computed_on"]["arithmetic"],
            "describes_target": v["computed_on"]["describes_target"],
        },
        "model_bytes": manifest["sizes_bytes"]["artifact_model"],
    }

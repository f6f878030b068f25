"""The artifact's graph as the runtime loads it: onnxruntime's offline optimisation, and the
weights saved beside the graph so that session creation maps them instead of parsing them."""

from __future__ import annotations

from pathlib import Path


def optimize_offline(src: Path, dst: Path) -> None:
    """Save ORT's extended-level optimised graph so the runtime can load it with optimisation off.

    Extended (not "all") keeps the graph free of layout transforms tied to this build machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(
        str(src),
        sess_options=opts,
        providers=["CPUExecutionProvider"],
        # Would undo fuse_transformer's choice (see there).
        disabled_optimizers=["SkipLayerNormFusion"],
    )


WEIGHTS_SUFFIX = ".data"


def save_for_loading(src: Path, dst: Path) -> list[Path]:
    """`src` as the artifact's graph: `dst` holds the graph, `dst` + ".data" its weights.

    With the weights outside the protobuf, onnxruntime maps them from the file instead of parsing
    and copying them out of one 20-250 MB message: session creation took 41 ms instead of 90 for
    the stand-in (python bench/cold_start.py). Nothing else changes (optimisation off: the same
    graph).
    Returns the files written.
    """
    import onnxruntime as ort

    weights = dst.with_name(dst.name + WEIGHTS_SUFFIX)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", weights.name
    )
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return [dst, weights] if weights.is_file() else [dst]

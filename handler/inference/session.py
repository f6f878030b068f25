"""onnxruntime session options and creation."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def create_session(path: Path, threads: int, pre_optimized: bool) -> ort.InferenceSession:
    """One CPU session with a fixed number of intra-op threads.

    A graph that the build already optimised offline is loaded with optimisations off: the
    optimiser's work is not repeated at every cold start (about half of session creation).
    https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if pre_optimized
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

"""The earlier int8 recipe, kept as the benchmarks' baseline: onnxruntime's dynamic quantisation
with one activation scale per input tensor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class _NoPreprocessHint(logging.Filter):
    """quantize_dynamic logs a hint about static-quantisation pre-processing on the root logger
    at every call; it does not apply to dynamic quantisation of a fused graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_per_tensor(src: Path, dst: Path, reduce_range: bool = True) -> dict[str, Any]:
    """The previous recipe, kept as the benchmarks' baseline: onnxruntime dynamic int8, one
    activation scale per input tensor (padding and batch-mates included), per-channel weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _NoPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            # ONNX shape inference cannot type the outputs of ORT's fused contrib ops.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(hint)
    return {"method": "per_tensor_dynamic", "per_channel": True, "reduce_range": reduce_range}

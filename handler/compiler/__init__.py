"""Build time only: hub id or local folder -> verified int8 ONNX artifact. May import onnx,
huggingface_hub and torch, always lazily, so the runtime never needs them."""

"""Pure inference core: numpy, onnxruntime and tokenizers only (tests/inference/test_imports.py)."""

from handler.inference.classifier import Answers, Classifier, TextResult
from handler.inference.postprocess import LEGACY

__all__ = ["LEGACY", "Answers", "Classifier", "TextResult"]

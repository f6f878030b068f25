"""A Hugging Face text classifier behind AWS Lambda.

`handler.lambda_handler` is the Lambda entry point (the image's CMD). It is resolved lazily so
that `python -m handler build` never loads a model; Lambda resolves it during the init phase,
so the model is still loaded once per execution environment, before the first request.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "lambda_handler":
        from handler.entry import lambda_handler

        return lambda_handler
    raise AttributeError(f"module 'handler' has no attribute {name!r}")

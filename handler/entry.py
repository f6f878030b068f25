"""lambda_handler: built once per execution environment, at import (Lambda's init phase).

Importing this module loads the model named by MODEL_DIR; that is the point of it. Tests and
tools that want a Function without side effects import handler.function instead.
"""

from __future__ import annotations

from handler.config import get_settings
from handler.function import Function, make_lambda_handler

function = Function.from_settings(get_settings())
lambda_handler = make_lambda_handler(function)

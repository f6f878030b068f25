"""lambda_handler: built once per execution environment, at import (Lambda's init phase).

Importing this module loads the model named by MODEL_DIR; that is the point of it. Tests and
tools that want a LambdaFunction without side effects import handler.function instead.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS starts a thread per core when numpy is imported, and that thread spins waiting
# for matrix work this function never gives it (inference runs in onnxruntime): 0.12 s of CPU
# during init, which on Lambda comes out of the same vCPU share as the init itself
# (docs/benchmarks.md, "Cold start as Lambda bills it": `python bench/cold_start.py --against
# REV`). Set before numpy loads; a value you set yourself wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from handler.config import get_settings
from handler.function import LambdaFunction, make_lambda_handler

settings = get_settings()
# tokenizers sizes its Rayon pool from the host's cores, which on Lambda overstate the vCPU share
# the memory setting buys; match it to the inference threads unless the user chose otherwise.
os.environ.setdefault("RAYON_NUM_THREADS", str(settings.num_threads))
# pydantic scans every installed distribution's entry points for plugins at its first model
# (importlib.metadata, ~30 ms of the API function's cold start); this function uses none.
# Set PYDANTIC_DISABLE_PLUGINS yourself (e.g. to a list of names) to change that.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
function = LambdaFunction.from_settings(settings)
lambda_handler = make_lambda_handler(function)

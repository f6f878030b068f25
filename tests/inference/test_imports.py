"""The inference core imports numpy, onnxruntime, tokenizers (and the errors leaf) only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import handler.inference

ALLOWED = {"numpy", "onnxruntime", "tokenizers", "handler"}
ALLOWED_HANDLER = ("handler.inference", "handler.errors")
CORE = Path(handler.inference.__file__).parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_imports_only_its_three_libraries() -> None:
    bad = []
    for path in sorted(CORE.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names:
                continue
            if top not in ALLOWED or (top == "handler" and not name.startswith(ALLOWED_HANDLER)):
                bad.append(f"{path.name}: {name}")
    assert bad == []


def test_runtime_path_loads_no_build_time_library(tiny_model: Path) -> None:
    code = (
        "import sys, handler.entry, handler.adapters.s3_batch;"
        "heavy=('torch','transformers','onnx','huggingface_hub','optimum');"
        "bad=[m for m in heavy if m in sys.modules];"
        "print(','.join(bad))"
    )
    # The handler module builds its model at import: the tiny model stands in.
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": ""},
    )
    assert out.stdout.strip() == ""


ROLE_CODE = (
    "import sys, json, handler.entry;"
    "mods=('fastapi','starlette','mangum','pydantic','boto3','botocore','handler.api',"
    "'handler.adapters.s3_batch','handler.batch.job');"
    "print(json.dumps({m: m in sys.modules for m in mods}))"
)


def _loaded(tiny_model: Path, role: str) -> dict[str, bool]:
    import json

    out = subprocess.run(
        [sys.executable, "-c", ROLE_CODE],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": "", "FUNCTION_ROLE": role},
    )
    loaded: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_each_role_imports_only_what_its_events_need(tiny_model: Path) -> None:
    batch = _loaded(tiny_model, "batch")
    assert not any(batch[m] for m in ("fastapi", "starlette", "mangum", "pydantic", "handler.api"))
    assert batch["handler.adapters.s3_batch"] and batch["handler.batch.job"]
    assert not batch["boto3"]  # the S3 client is made on the first S3 event
    api = _loaded(tiny_model, "api")
    assert api["fastapi"] and api["mangum"] and api["handler.api"]
    # (botocore's package module is imported by Powertools to tag its user agent: ~1 ms.)
    assert not any(api[m] for m in ("boto3", "handler.adapters.s3_batch"))
    assert not api["handler.batch.job"]
    both = _loaded(tiny_model, "all")
    assert both["fastapi"] and both["handler.adapters.s3_batch"]


def test_the_api_functions_init_builds_our_models_and_defers_fastapis_openapi_models(
    tiny_model: Path,
) -> None:
    """FastAPI's own OpenAPI models are built on first use (/openapi.json), not at every cold
    start; the request/response models the hot path validates with are built at init; and a
    model defined afterwards builds as pydantic normally does (the switch is put back)."""
    import json

    code = """
import json, pydantic, handler.entry
from fastapi.openapi import models
from handler.api import schemas

def built(model):
    return type(model.__pydantic_validator__).__name__ == "SchemaValidator"

class Later(pydantic.BaseModel):
    x: int

before = built(models.OpenAPI)
handler.entry.function.http.app.openapi()
print(json.dumps({"ours": built(schemas.ClassifyRequest), "openapi_at_init": before,
                  "openapi_after_use": built(models.OpenAPI), "later": built(Later)}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": "", "FUNCTION_ROLE": "api"},
    )
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {
        "ours": True,
        "openapi_at_init": False,
        "openapi_after_use": True,
        "later": True,
    }


THREADS_CODE = (
    "import os, handler.entry;"
    "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))"
)


def _threads_after_init(tiny_model: Path, extra: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", THREADS_CODE],
        capture_output=True,
        text=True,
        check=True,
        env={"MODEL_DIR": str(tiny_model), "PATH": "", "FUNCTION_ROLE": "batch", **extra},
    )
    value, threads = out.stdout.split()
    return value, int(threads)


def test_init_starts_no_openblas_thread_pool(tiny_model: Path) -> None:
    """OpenBLAS's idle threads would spin through the function's vCPU share during init; the
    entry module caps them before numpy loads, and a value set by the user still wins."""
    if not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2:
        pytest.skip("needs Linux's /proc/self/task and 2 CPUs (OpenBLAS starts one per core)")
    value, threads = _threads_after_init(tiny_model, {})
    assert value == "1"
    _, with_pool = _threads_after_init(tiny_model, {"OPENBLAS_NUM_THREADS": "2"})
    assert with_pool == threads + 1  # the user's choice: a pool of two, one thread started

"""scripts/build_layer.sh: builds, checks its size, and the handler imports from what it built.

This machine runs Python 3.11 while Lambda runs 3.12, and a 3.12 layer's compiled wheels cannot
load here. So the test builds the same requirements for 3.11 (same manylinux_2_28 platform tags,
same pins) and runs the handler from that folder in a clean interpreter (-I -S: no site-packages);
the 3.12 builds for x86_64 and arm64 are resolved and size-checked by the same script.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.infra.tools import tool

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LAYER_SCRIPT = (ROOT / "scripts" / "build_layer.sh").read_text()
RUNTIME_PACKAGES = re.search(r"^RUNTIME_PACKAGES=\(([^)]*)\)", LAYER_SCRIPT, re.M)[1].split()  # type: ignore[index]


def test_the_image_and_the_layer_ship_the_same_runtime_packages() -> None:
    """Copy what ships: both the Dockerfile and the layer script name the runtime subpackages,
    and they name the same ones (a package added to one and not the other fails here)."""
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    copied = re.findall(
        r"^COPY handler/(\w+)/ \$\{LAMBDA_TASK_ROOT\}/handler/\1/$", dockerfile, re.M
    )
    assert sorted(copied) == sorted(RUNTIME_PACKAGES)
    assert "COPY handler/*.py ${LAMBDA_TASK_ROOT}/handler/" in dockerfile
    assert not re.search(
        r"rm -\w* .*handler/", dockerfile + LAYER_SCRIPT
    )  # never rm what was copied


def test_what_ships_is_all_the_function_imports(tmp_path: Path) -> None:
    """Both roles load and answer from a copy of the shipped files alone: the runtime needs
    nothing from handler/compiler, handler/local or handler/tune."""
    shipped = tmp_path / "function" / "handler"
    shipped.mkdir(parents=True)
    for module in (ROOT / "handler").glob("*.py"):
        shutil.copy(module, shipped)
    for package in RUNTIME_PACKAGES:
        shutil.copytree(ROOT / "handler" / package, shipped / package)
    script = """
import sys
import handler.function, handler.adapters.apigw, handler.adapters.s3_batch
import handler.adapters.s3_store
import handler.batch.shards, handler.api, handler.cli
loaded = sorted({m.split(".")[1] for m in sys.modules if m.startswith("handler.")})
print(" ".join(loaded))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path / "function",
        env={**os.environ, "PYTHONPATH": str(tmp_path / "function")},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert not {"compiler", "local", "tune"} & set(out.stdout.split()), out.stdout


ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine(), "x86_64")


def _python(pyver: str) -> str | None:
    """An interpreter of version `pyver` to compile the layer's bytecode with, if there is one."""
    for python in (sys.executable, os.environ.get("LAMBDA_PYTHON")):
        if python and Path(python).exists():
            out = subprocess.run(
                [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
            )
            if out.stdout.strip() == pyver:
                return python
    return None


def assert_bytecode_for_every_module(folder: Path, python: str) -> int:
    """Every .py has its __pycache__ twin for `python`, hash-based and unchecked (PEP 552 flags
    = 0b01), so nothing is compiled at a cold start and file times do not matter."""
    tag = subprocess.run(
        [python, "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    missing, checked, count = [], [], 0
    for source in folder.rglob("*.py"):
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        count += 1
        if not pyc.is_file():
            missing.append(str(source.relative_to(folder)))
            continue
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        if flags != 0b01:
            checked.append(f"{source.relative_to(folder)}: flags {flags:#b}")
    assert missing == [], f"{len(missing)} of {count} modules without bytecode: {missing[:10]}"
    assert checked == [], checked[:10]
    return count


def _build(out: Path, arch: str, pyver: str, model: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BYTECODE_PYTHON": _python(pyver) or "",
        "PYVER": pyver,
        "MODEL_DIR": str(model),
        "LAYER_OUT": str(out),
        "PIP": f"{sys.executable} -m pip",
    }
    return subprocess.run(
        [str(ROOT / "scripts" / "build_layer.sh"), arch],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )


def test_layer_for_this_python_imports_the_handler_in_a_clean_interpreter(
    tiny_model: Path, tmp_path: Path
) -> None:
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = _build(tmp_path, ARCH, pyver, tiny_model)
    assert proc.returncode == 0, proc.stderr
    assert "total unzipped" in proc.stdout
    built = tmp_path / f"{ARCH}-py{pyver}"
    assert (built / "layer.zip").stat().st_size > 0
    layer, function = built / "layer" / "python", built / "function"
    assert not (layer / "huggingface_hub").exists() and not (layer / "torch").exists()
    shipped = {p.name for p in (function / "handler").iterdir() if p.is_dir()} - {"__pycache__"}
    assert shipped == set(RUNTIME_PACKAGES), shipped
    assert "bytecode: compiled for Python" in proc.stdout
    assert assert_bytecode_for_every_module(layer, sys.executable) > 1000
    assert assert_bytecode_for_every_module(function, sys.executable) > 20
    # boto3 is provided by the Lambda runtime, not the layer: stand it in from a separate folder.
    runtime = tmp_path / "runtime-provided"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(runtime), "boto3"],
        check=True,
        timeout=600,
    )
    script = f"""
import json, sys
sys.path[:0] = [{str(function)!r}, {str(layer)!r}, {str(runtime)!r}]
from handler import lambda_handler
class LocalContext:  # the tools' context class stays out of the layer (handler/local)
    function_name, memory_limit_in_mb, aws_request_id = "layer-test", 2048, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:layer-test"
    def get_remaining_time_in_millis(self): return 900000
event = json.load(open({str(EVENTS / "apigw-http-classify.json")!r}))
response = lambda_handler(event, LocalContext())
bad = [m for m in ("torch", "transformers", "onnx", "huggingface_hub") if m in sys.modules]
body = json.loads(response["body"])
origin = sys.modules["onnxruntime"].__file__
print(json.dumps({{"status": response["statusCode"], "body": body, "bad": bad, "from": origin}}))
"""
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        capture_output=True,
        text=True,
        env={"MODEL_DIR": str(function / "model"), "PATH": ""},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["bad"] == []
    assert result["body"][0]["label"] == "POSITIVE"
    assert result["from"].startswith(str(layer))


Built = Callable[[str], tuple[Path, "subprocess.CompletedProcess[str]"]]


@pytest.fixture(scope="module")
def built312(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The 3.12 layer and function folders for an architecture, built once per module."""
    cache: dict[str, tuple[Path, subprocess.CompletedProcess[str]]] = {}

    def get(arch: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
        if arch not in cache:
            out = tmp_path_factory.mktemp(f"layer-{arch}")
            cache[arch] = (out, _build(out, arch, "3.12", tiny_model))
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_python312_layer_builds_within_the_size_limit(arch: str, built312: Built) -> None:
    tmp_path, proc = built312(arch)
    assert proc.returncode == 0, proc.stderr
    assert f"layer ({arch}, python 3.12)" in proc.stdout
    python312 = _python("3.12")
    if python312 is not None:  # bytecode for the runtime's Python, where this machine has it
        built = tmp_path / f"{arch}-py3.12"
        assert_bytecode_for_every_module(built / "layer" / "python", python312)
        assert_bytecode_for_every_module(built / "function", python312)
    libs = list(
        (tmp_path / f"{arch}-py3.12" / "layer" / "python" / "onnxruntime" / "capi").glob("*.so")
    )
    machine = "x86-64" if arch == "x86_64" else "aarch64"
    file_out = subprocess.run(["file", str(libs[0])], capture_output=True, text=True).stdout
    assert machine in file_out.replace("x86_64", "x86-64") or "ARM aarch64" in file_out


def test_sam_build_of_the_zip_template_ships_the_bytecode(built312: Built, tmp_path: Path) -> None:
    """`sam build -t infra/template-zip.yaml`, as docs/deploying.md deploys it, with the real SAM
    CLI: its Python builder would drop *.pyc; the function's Makefile build copies them."""
    sam = tool("sam")
    python312 = _python("3.12")
    if python312 is None:
        pytest.skip("no Python 3.12 here to check the bytecode against (LAMBDA_PYTHON)")
    out, proc = built312("x86_64")
    assert proc.returncode == 0, proc.stderr
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "template-zip.yaml", repo / "infra")
    (repo / "layers" / "build").mkdir(parents=True)
    (repo / "layers" / "build" / "deploy").symlink_to(out / "x86_64-py3.12")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(python312).parent), os.environ.get("PATH", "")]),
        "SAM_CLI_TELEMETRY": "0",
    }
    build_dir = tmp_path / "sam-build"
    done = subprocess.run(
        [sam, "build", "-t", "infra/template-zip.yaml", "--build-dir", str(build_dir)],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    function = build_dir / "ApiFunction"
    assert assert_bytecode_for_every_module(function, python312) > 20
    assert (function / "model" / "manifest.json").is_file()
    assert not (function / "Makefile").exists()  # the build recipe is not shipped
    # The layer is taken as the script built it (no build method): the built template points
    # at that folder, bytecode included.
    built_template = (build_dir / "template.yaml").read_text()
    content_uri = re.search(r"ContentUri: (\S+)", built_template)
    assert content_uri is not None, built_template
    layer = (build_dir / content_uri.group(1)).resolve() / "python"
    assert (layer / "onnxruntime").is_dir() and list(layer.rglob("*.pyc"))


def test_bad_architecture_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    proc = _build(tmp_path, "sparc", "3.12", tiny_model)
    assert proc.returncode == 2 and "x86_64 or arm64" in proc.stderr

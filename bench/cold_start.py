"""Cold start: the init phase as Lambda bills it, and a fresh process against the pipeline's.

    python bench/cold_start.py [--repeats 5] [--out bench-results] [--python .venv-lambda/bin/python]
    python bench/cold_start.py --against REV [--repeats 6]   # A/B with an earlier commit, stand-in
    python bench/cold_start.py --vs-pipeline [--repeats 5]   # fresh process vs transformers; image size

As billed: process start to the runtime's first GET /next, under awslambdaric on the runtime's
Python (3.12), with nothing writable for bytecode.

Layouts, from scripts/build_layer.sh (x86_64, the runtime's Python):
  zip + layer   PYTHONPATH = function/ : layer/python/ : runtime/ (Lambda: /var/task, /opt/python,
                /var/runtime), bytecode as the script ships it (unchecked-hash)
  zip, source   the same folders without any __pycache__ (what the layer shipped before)
  image         one folder (layer + function, as the Dockerfile's pip --target and COPY make it),
                bytecode as the Dockerfile compiles it
runtime/ holds what Lambda's runtime provides (awslambdaric, boto3), pip-installed for 3.12.
Roles: FUNCTION_ROLE=api and =batch. Models: the stand-in and DistilBERT-base size (random
weights, from bench/common.py's prepare()). Beside each: the in-process figure (`import
handler.entry` timed inside the same interpreter, what the docs reported before) and the first
and second request's latency after init (is priming worth it?). Median of --repeats fresh
processes; PYTHONDONTWRITEBYTECODE=1 stands in for Lambda's read-only /var/task and /opt.

CPU: Lambda gives a function the vCPU share its memory buys (1,769 MB: one vCPU) as a CFS quota on
a machine with more cores, so a thread that merely spins (OpenBLAS's, once) eats the init's own
time. Every process runs in a cgroup with that quota (--vcpus, default 1.0) where cgroups are
writable (root, v1 or v2); elsewhere unconstrained, and the result says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import EVAL_A, SHORT, STANDIN, checkout, http_event, prepare, table  # noqa: E402
from handler.local.runtime_api import RuntimeAPI  # noqa: E402
from handler.tune import quota  # noqa: E402

AWSLAMBDARIC = "awslambdaric==4.2.2"
BOTO3 = "boto3==1.44.8"
HTTP_EVENT = http_event(SHORT)


def sh(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw)


def layouts(out: Path, python: str) -> dict[str, list[Path]]:
    """Build the layer and function folders (once) and the layouts; returns PYTHONPATH parts."""
    pyver = sh(python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    built = out / f"x86_64-py{pyver}"
    sh(
        str(ROOT / "scripts/build_layer.sh"),
        "x86_64",
        cwd=ROOT,
        env={
            **os.environ,
            "PYVER": pyver,
            "LAYER_OUT": str(out),
            "BYTECODE_PYTHON": python,
            "MODEL_DIR": str(out / "no-model"),  # models are passed by MODEL_DIR below
            "PIP": f"{sys.executable} -m pip",
        },
    )
    runtime = out / "runtime"
    if not (runtime / "awslambdaric").is_dir():
        sh(python, "-m", "pip", "install", "--quiet", "--target", str(runtime), AWSLAMBDARIC, BOTO3)
    source = out / "zip-source"
    shutil.rmtree(source, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(built / "function", source / "function", ignore=ignore)
    shutil.copytree(built / "layer" / "python", source / "layer", ignore=ignore)
    image = out / "image-task"
    shutil.rmtree(image, ignore_errors=True)
    shutil.copytree(built / "layer" / "python", image)
    shutil.copytree(built / "function", image, dirs_exist_ok=True)
    return {
        "zip + layer": [built / "function", built / "layer" / "python", runtime],
        "zip, source only": [source / "function", source / "layer", runtime],
        "image": [image, runtime],
    }


QUOTA: list[str] = []  # argv prefix that runs a command in the quota cgroup, once made


def one_start(
    python: str, path: list[Path], model: Path, role: str, prime: bool = False
) -> dict[str, float]:
    """Init, then two requests (HTTP for the API role, warm-up for batch). With prime, a
    {"warmup": true} event first (what provisioned concurrency or a schedule would send)."""
    api = RuntimeAPI().start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(map(str, path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "LAMBDA_TASK_ROOT": str(path[0]),
        "AWS_LAMBDA_FUNCTION_NAME": "text-classifier",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",  # one vCPU: one inference thread
        "AWS_DEFAULT_REGION": "us-east-1",
        "MODEL_DIR": str(model),
        "FUNCTION_ROLE": role,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "OUTPUT_BUCKET": "bench-output",
        "OUTPUT_PREFIX": "predictions/",
    }
    start = time.time()
    proc = subprocess.Popen(
        # -S: no site-packages; everything comes from the layout's folders, as on Lambda.
        [*QUOTA, python, "-S", "-m", "awslambdaric", "handler.lambda_handler"],
        env=env,
        # Lambda's working directory is the task root (/var/task); `-m` puts it on sys.path
        # first, so the function's own folder, not this checkout, provides `handler`.
        cwd=path[0],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        init = api.first_next(timeout=120) - start
        if prime:
            assert api.result(api.submit({"warmup": True}), timeout=120).kind == "response"
        event = HTTP_EVENT if role == "api" else {"warmup": True}
        latencies = []
        for _ in range(2):
            t0 = time.perf_counter()
            outcome = api.result(api.submit(event), timeout=120)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert outcome.kind == "response", outcome
        return {"init_s": init, "first_ms": latencies[0], "second_ms": latencies[1]}
    finally:
        proc.kill()
        proc.wait()
        api.stop()


def in_process(python: str, path: list[Path], model: Path, role: str) -> float:
    code = (
        "import time; t = time.perf_counter(); import handler.entry; print(time.perf_counter() - t)"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(map(str, path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MODEL_DIR": str(model),
        "FUNCTION_ROLE": role,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "OUTPUT_BUCKET": "bench-output",
        "OUTPUT_PREFIX": "predictions/",
    }
    return float(sh(*QUOTA, python, "-S", "-c", code, env=env, cwd=path[0]).stdout.strip())


def against(rev: str, out: Path, python: str, models: dict[str, Any], repeats: int) -> int:
    """A/B: this checkout's function folder and stand-in artifact against those of git
    revision `rev` (its handler/, byte-compiled the same way, and the stand-in built by its own
    pipeline), on the same layer, quota and machine, interleaved. Prints medians per role."""
    worktree = checkout(rev, out)
    old_fn, old_model = out / f"function-{rev}", out / f"stand-in-{rev}"
    if not (old_model / "manifest.json").is_file():
        sh(
            sys.executable,
            "-m",
            "handler",
            "build",
            "--model",
            str(STANDIN),
            "--eval",
            str(EVAL_A),
            "--out",
            str(old_model),
            cwd=worktree,
        )
    shutil.rmtree(old_fn, ignore_errors=True)
    shutil.copytree(worktree / "handler", old_fn / "handler")
    sh(python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(old_fn))
    parts = layouts(out, python)["zip + layer"]
    sides = {rev: ([old_fn, *parts[1:]], old_model), "this": (parts, models["stand-in"]["int8"])}
    runs: dict[tuple[str, str], list[float]] = {(s, r): [] for s in sides for r in ("api", "batch")}
    for _ in range(repeats):
        for side, role in runs:
            path, model = sides[side]
            runs[side, role].append(one_start(python, path, model, role)["init_s"])
    for (side, role), values in runs.items():
        print(
            f"{side:>12} {role:>5}: init median {statistics.median(values):.3f} s "
            f"(min {min(values):.3f}, n={len(values)})"
        )
    return 0


# -- a fresh process against transformers' (--vs-pipeline) -----------------------------------------


def fresh_process(kind: str, paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """Median seconds from process start to `kind`'s first answer (bench/cold_probe.py), and its
    peak RSS, over `repeats` fresh processes."""
    spec = {
        "source": str(paths["source"]),
        "int8": str(paths["int8"]),
        "text": SHORT,
        "event": json.dumps(HTTP_EVENT),
    }
    env = {
        **os.environ,
        "MODEL_DIR": str(paths["int8"]),
        "NUM_THREADS": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
    }
    probe = str(ROOT / "bench" / "cold_probe.py")
    times, rss = [], []
    for _ in range(repeats):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, probe, kind, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT "))
        _, done, maxrss = line.split()
        times.append(float(done) - start)
        rss.append(int(maxrss) / 1024)
    return {"cold_start_s": round(statistics.median(times), 3), "peak_rss_mib": round(max(rss), 1)}


def image_payload(out: Path, model_dir: Path) -> dict[str, Any]:
    """What the container image adds to the base: the pinned runtime requirements installed as
    the Dockerfile does (manylinux_2_28, python 3.12, x86_64), boto3, and the model."""
    env = {
        **os.environ,
        "PYVER": "3.12",
        "MODEL_DIR": str(model_dir),
        "LAYER_OUT": str(out / "image"),
        "PIP": f"{sys.executable} -m pip",
    }
    sh(str(ROOT / "scripts/build_layer.sh"), "x86_64", env=env)
    target = out / "image" / "boto3"
    sh(sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), BOTO3)

    def du(p: Path) -> float:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1048576

    built = out / "image" / "x86_64-py3.12"
    deps, model, boto = du(built / "layer"), du(model_dir), du(target)
    return {
        "dependencies_mib": round(deps, 1),
        "boto3_mib": round(boto, 1),
        "model_mib": round(model, 1),
        "total_mib": round(deps + boto + model, 1),
    }


def versus_pipeline(out: Path, models: dict[str, Any], repeats: int) -> int:
    kinds = ("pipeline", "ort_int8", "classifier", "function")
    rows = []
    result: dict[str, Any] = {"cold_start": {}}
    for size, paths in models.items():
        figures = {kind: fresh_process(kind, paths, repeats) for kind in kinds}
        result["cold_start"][size] = figures
        base = figures["pipeline"]["cold_start_s"]
        for kind, v in figures.items():
            ratio = f"{v['cold_start_s'] / base:.3f}"
            rows.append([size, kind, v["cold_start_s"], v["peak_rss_mib"], ratio])
    result["image_payload"] = i = image_payload(out, models["distilbert-base"]["int8"])
    (out / "cold-start-vs-pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    header = ["model", "fresh process", "cold start s", "peak RSS MiB", "cold start / pipeline"]
    print(table(header, rows))
    print(
        f"Image payload over the base image: dependencies {i['dependencies_mib']} MiB + boto3 "
        f"{i['boto3_mib']} MiB + model (DistilBERT-base int8) {i['model_mib']} MiB = "
        f"{i['total_mib']} MiB."
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--python", default=str(ROOT / ".venv-lambda/bin/python"))
    ap.add_argument("--sizes", default="stand-in,distilbert-base")
    ap.add_argument("--vcpus", type=float, default=1.0, help="CPU quota (1.0: 1,769 MB; 0: none)")
    ap.add_argument(
        "--against", metavar="REV", help="only A/B this checkout against git revision REV"
    )
    ap.add_argument(
        "--vs-pipeline",
        action="store_true",
        help="only a fresh process of each path against transformers' pipeline, and the image size",
    )
    args = ap.parse_args()
    if args.vs_pipeline:
        return versus_pipeline(args.out, prepare(args.out), args.repeats)
    procs = quota.make_group("bench-init", args.vcpus) if args.vcpus > 0 else None
    QUOTA[:] = quota.argv_in(procs)
    vcpu_quota = args.vcpus if procs else None
    print(
        f"CPU quota: {f'{vcpu_quota} vCPU (cgroup)' if vcpu_quota else 'none (cgroups not writable)'}"
    )
    models = prepare(args.out)
    if args.against:
        return against(args.against, args.out / "init", args.python, models, args.repeats)
    parts = layouts(args.out / "init", args.python)
    version = sh(args.python, "--version").stdout.strip()
    rows = []
    for size in args.sizes.split(","):
        model = models[size]["int8"]
        configs = [(layout, role) for layout in parts for role in ("api", "batch")]
        runs: dict[tuple[str, str], list[dict[str, float]]] = {c: [] for c in configs}
        inproc: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
        primed: list[float] = []
        # Rounds: every configuration once per round, so that this machine's drift (2x within
        # minutes) is spread over all of them alike and the ratios hold.
        for _ in range(args.repeats):
            for layout, role in configs:
                path = parts[layout]
                runs[layout, role].append(one_start(args.python, path, model, role))
                inproc[layout, role].append(in_process(args.python, path, model, role))
            zip_api = one_start(args.python, parts["zip + layer"], model, "api", prime=True)
            primed.append(zip_api["first_ms"])
        for layout, role in configs:
            rs = runs[layout, role]
            source = runs["zip, source only", role]
            row = {
                "model": size,
                "layout": layout,
                "role": role,
                "init_s": round(statistics.median(r["init_s"] for r in rs), 3),
                "init_min_s": round(min(r["init_s"] for r in rs), 3),
                "init_max_s": round(max(r["init_s"] for r in rs), 3),
                "vs_source_only": round(
                    statistics.median(r["init_s"] for r in rs)
                    / statistics.median(r["init_s"] for r in source),
                    2,
                ),
                "in_process_import_s": round(statistics.median(inproc[layout, role]), 3),
                "first_request_ms": round(statistics.median(r["first_ms"] for r in rs), 2),
                "second_request_ms": round(statistics.median(r["second_ms"] for r in rs), 2),
                "first_request_after_warmup_ms": (
                    round(statistics.median(primed), 2)
                    if (layout, role) == ("zip + layer", "api")
                    else None
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"python": version, "repeats": args.repeats, "vcpu_quota": vcpu_quota, "rows": rows}
    (args.out / "init.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Init as billed: awslambdaric on {result['python']}, median of {result['repeats']}, "
        f"CPU quota {result.get('vcpu_quota') or 'none'} vCPU",
        "",
        "| model | layout | role | init s (process start to first /next) | min-max | "
        "init / source-only | in-process `import handler.entry` s | first request ms | "
        "second request ms | first request after a warm-up event ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        primed = r.get("first_request_after_warmup_ms")
        lines.append(
            f"| {r['model']} | {r['layout']} | {r['role']} | **{r['init_s']}** | "
            f"{r['init_min_s']}-{r['init_max_s']} | {r['vs_source_only']} | "
            f"{r['in_process_import_s']} | "
            f"{r['first_request_ms']} | {r['second_request_ms']} | "
            f"{primed if primed is not None else ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

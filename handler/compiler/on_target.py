"""The gate's figures on the target's own arithmetic, for an artifact built for another CPU.

An `arm64` artifact built on x86-64 has the target's integer GEMMs, but its float kernels
(LayerNorm, GELU, Softmax, the per-token scales) are x86's, and per-token rounding amplifies the
difference. So, where it can, the build scores the shipped artifact on an emulated Graviton2:
`qemu-aarch64 -cpu neoverse-n1` (Debian's qemu-user) running an arm64 Python with the runtime's
own onnxruntime, tokenizers and numpy wheels for aarch64 (`scripts/arm64_root.sh` makes that
root: Debian's arm64 python3 packages unpacked, the wheels beside them). The child runs this
module (`python -m handler.compiler.on_target SPEC`), which imports only the inference core and
the gate's own scoring, so the figures are computed by the same code on the target's kernels.

Emulation is slow (about 100x): the texts are split over one child per CPU.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import handler
from handler.compiler.targets import Target
from handler.errors import BuildError
from handler.inference.tokenizer import TextInput

QEMU = "qemu-aarch64"
CPU = "neoverse-n1"  # Graviton2, Lambda's arm64; `-cpu max` enables SME, which qemu 7.2 miscomputes
CPU_DESCRIPTION = "Arm Neoverse N1 (Graviton2), emulated by qemu-aarch64"
ROOT_ENV = "ARM64_ROOT"
DEFAULT_ROOT = Path(handler.__file__).resolve().parent.parent / ".arm64-root"
# Batch invariance on the target: these many report texts, in padded batches of these sizes
# (the full check on the host runs every text in six sizes; emulated, that would take an hour).
INVARIANCE_TEXTS = 32
INVARIANCE_SIZES = (8, 32)
MODES = ("auto", "host", "target")


@dataclass(frozen=True)
class Emulator:
    """How to run Python on an emulated arm64 CPU."""

    qemu: str
    sysroot: Path
    python: Path
    site: Path

    def describe(self) -> dict[str, Any]:
        versions = json.loads((self.site.parent / "versions.json").read_text())
        versions.pop("stamp", None)
        return {"cpu": CPU_DESCRIPTION, "qemu_cpu": CPU, **versions}

    def _run(self, spec: dict[str, Any], timeout: float) -> None:
        code_root = Path(handler.__file__).resolve().parent.parent
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(self.site), str(code_root)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "PROGRESS": "0",
        }
        argv = [self.qemu, "-cpu", CPU, "-L", str(self.sysroot), str(self.python)]
        argv += ["-m", "handler.compiler.on_target", json.dumps(spec)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise BuildError(
                f"the emulated arm64 run failed ({' '.join(argv[:6])} ...): "
                f"{proc.stderr.strip()[-2000:]}. Remake the root with scripts/arm64_root.sh, "
                "or build with --verify-on host to verify on this machine instead"
            )

    def scores(
        self,
        model_dir: Path,
        texts: Sequence[TextInput],
        function: str | None,
        timeout: float = 7200,
    ) -> np.ndarray[Any, Any]:
        """The scores the artifact in `model_dir` gives `texts` on the target, as gate.scores
        computes them on the host; the texts are split over one child per CPU."""
        workers = max(1, min(len(_cpus()), len(texts) // 16 or 1))
        bounds = [len(texts) * i // workers for i in range(workers + 1)]
        with tempfile.TemporaryDirectory(prefix="on-target-") as tmp:
            specs: list[dict[str, Any]] = []
            for i in range(workers):
                texts_file, out = Path(tmp) / f"texts-{i}.json", Path(tmp) / f"scores-{i}.npy"
                texts_file.write_text(json.dumps(texts[bounds[i] : bounds[i + 1]]))
                specs.append(
                    {
                        "what": "scores",
                        "model": str(model_dir),
                        "texts": str(texts_file),
                        "function": function,
                        "out": str(out),
                    }
                )
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda s: self._run(s, timeout), specs))
            return np.concatenate([np.load(str(s["out"])) for s in specs])

    def batch_invariance(self, model_dir: Path, texts: Sequence[TextInput]) -> dict[str, Any]:
        """gate.batch_invariance on the target, for the first INVARIANCE_TEXTS texts."""
        with tempfile.TemporaryDirectory(prefix="on-target-") as tmp:
            texts_file, out = Path(tmp) / "texts.json", Path(tmp) / "invariance.json"
            texts_file.write_text(json.dumps(texts[:INVARIANCE_TEXTS]))
            spec = {"what": "invariance", "model": str(model_dir), "texts": str(texts_file)}
            self._run({**spec, "out": str(out)}, timeout=7200)
            result: dict[str, Any] = json.loads(out.read_text())
            return result


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def host_is_arm64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def find(target: str) -> tuple[Emulator | None, str]:
    """The emulator for `target` on this host, or None and why not (a sentence for the log and
    the manifest). Only arm64 built elsewhere needs one."""
    if target != "arm64" or host_is_arm64():
        return None, "the build host runs the target's arithmetic itself"
    qemu = shutil.which(QEMU)
    if qemu is None:
        return None, f"{QEMU} is not installed (Debian: apt-get install qemu-user)"
    root = Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    pythons = sorted((root / "sysroot" / "usr" / "bin").glob("python3.[0-9]*"))
    pythons = [p for p in pythons if p.name.replace("python3.", "").isdigit()]
    if not pythons or not (root / "versions.json").is_file():
        return None, (
            f"no arm64 Python at {root} (make one with scripts/arm64_root.sh, or set {ROOT_ENV})"
        )
    return Emulator(qemu, root / "sysroot", pythons[-1], root / "site"), f"{QEMU} -cpu {CPU}"


def _child(spec: dict[str, Any]) -> None:
    """In the emulated Python: the gate's own scoring of the artifact, written to spec["out"]."""
    from handler.compiler import gate
    from handler.inference import Classifier

    clf = Classifier.from_dir(spec["model"], threads=1)
    # JSON has no tuples: a pair comes back as a list of two.
    texts = [
        t if isinstance(t, str) else tuple(t) for t in json.loads(Path(spec["texts"]).read_text())
    ]
    if spec["what"] == "scores":
        np.save(spec["out"], gate.scores(clf, texts, "on target", spec["function"]))
    else:
        import platform

        result = gate.batch_invariance(clf, texts, INVARIANCE_SIZES)
        result["machine"] = platform.machine()  # aarch64: the figures are the target's
        Path(spec["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def computed_on(
    target: Target,
    quant: dict[str, Any],
    saturates: bool,
    emulator: Emulator | None = None,
    no_emulator: str = "",
) -> dict[str, Any]:
    """Where the gate's figures were computed, and how far they describe the target's CPU."""
    machine = platform.machine().lower()
    host_arch = "arm64" if machine in ("aarch64", "arm64") else machine
    host = {"arch": host_arch, "cpu": _cpu_model(), "u8s8_saturates": saturates}
    if emulator is not None:
        return {
            "host": host,
            "arithmetic": f"the target's: {CPU_DESCRIPTION}, running the shipped "
            "artifact on the aarch64 builds of the runtime's onnxruntime, tokenizers and numpy",
            "describes_target": True,
            "target_cpu": emulator.describe(),
            "parts": {
                "report": "target",
                "unlabelled": "target",
                "batch_invariance": f"target: the first {INVARIANCE_TEXTS} report "
                f"texts in padded batches of {' and '.join(map(str, INVARIANCE_SIZES))}",
                "selection": "build host",
                "throughput": "build host",
            },
            "note": "emulation gives the target's arithmetic, not its speed",
        }
    if target.name == "arm64" and host_arch != "arm64":
        return {
            "host": host,
            "arithmetic": "build host (x86-64), not the target's",
            "describes_target": False,
            "note": "an arm64 artifact verified on an x86-64 host: the integer GEMMs are the "
            "target's, but float kernels differ by ISA and per-token rounding amplifies them "
            "(measured: 1 label of 120 held-out texts differed under qemu-aarch64). Not "
            f"emulated here: {no_emulator or 'not asked for'}. Build on arm64 (Graviton), or "
            "where qemu-aarch64 can run it, for the target's own figures.",
        }
    if "evaluated_as" in quant:
        return {
            "host": host,
            "arithmetic": "exact twin (u8u8) on the build host: the integers a CPU without "
            "saturation computes",
            "describes_target": True,
            "note": "float kernels around the GEMMs may differ from the target's in the last "
            "bits (ISA-dependent)",
        }
    return {
        "host": host,
        "arithmetic": "native, on the build host",
        "describes_target": True,
        "note": "integer GEMMs give the same integers on every CPU of the target; float kernels "
        "differ by ISA in the last bits, which can move a score near a rounding step",
    }

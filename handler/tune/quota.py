"""A CPU quota as Lambda sells it: memory / 1,769 MB vCPUs, as a CFS quota on a cgroup.

Lambda gives a function CPU in proportion to its memory (1,769 MB buys one vCPU,
https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html); below one vCPU that is
a share of CPU time, which a CFS quota (`cpu.cfs_quota_us` / `cpu.max`) reproduces on Linux.
Creating a cgroup needs root and a writable cgroup file system; where there is none, callers
measure without a quota and say so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from handler.config import MAX_LAMBDA_VCPUS, MB_PER_VCPU

PERIOD_US = 100_000  # the kernel's default CFS period
CGROUP_ROOT = Path("/sys/fs/cgroup")


def lambda_vcpus(memory_mb: int) -> float:
    """The vCPU share Lambda gives `memory_mb`: proportional (10,240 MB, the largest size, buys
    5.79 vCPUs of time on six cores: github.com/rwnx/lambda-cpuinfo)."""
    return min(memory_mb / MB_PER_VCPU, float(MAX_LAMBDA_VCPUS))


def host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_group(name: str, vcpus: float, root: Path = CGROUP_ROOT) -> Path | None:
    """A cgroup whose CFS quota is `vcpus` CPUs (cgroup v1 `cpu` controller or v2 `cpu.max`);
    returns its `cgroup.procs` file, or None where cgroups cannot be written here."""
    quota = max(1000, int(vcpus * PERIOD_US))  # the kernel's smallest quota is 1 ms
    v1 = root / "cpu"
    try:
        if (v1 / "cpu.cfs_quota_us").is_file():
            group = v1 / name
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        elif (root / "cgroup.controllers").is_file():
            group = root / name
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            return None
    except OSError:
        return None
    return group / "cgroup.procs"


def remove_group(procs: Path | None) -> None:
    if procs is not None:
        with contextlib.suppress(OSError):  # still busy or already gone: the kernel keeps it
            procs.parent.rmdir()


@contextlib.contextmanager
def quota(name: str, vcpus: float, root: Path = CGROUP_ROOT) -> Iterator[Path | None]:
    procs = make_group(name, vcpus, root)
    try:
        yield procs
    finally:
        remove_group(procs)


def argv_in(procs: Path | None) -> list[str]:
    """An argv prefix that runs a command inside the group: the shell joins it, then becomes the
    command (no preexec_fn in a threaded parent)."""
    return [] if procs is None else ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh"]

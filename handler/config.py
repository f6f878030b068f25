"""Settings: the only reader of os.environ. Frozen, validated, cached."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from handler.errors import ConfigError

# The model folder when MODEL_DIR is unset: on Lambda `$LAMBDA_TASK_ROOT/model` (where
# infra/Dockerfile and scripts/build_layer.sh put it), elsewhere `./build/model` (what
# `python -m handler build` and scripts/demo.sh write).
LOCAL_MODEL_DIR = "build/model"
# What a function imports and serves (FUNCTION_ROLE): see handler/function.py.
ROLES = ("all", "api", "batch")
BUILD_COMMAND = "python -m handler build --model MODEL --eval labelled.tsv --out build/model"
# Lambda allocates CPU in proportion to memory: 1,769 MB buys one full vCPU, 10,240 MB six.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
MB_PER_VCPU = 1769
MAX_LAMBDA_VCPUS = 6
# A request's token budget per vCPU (MAX_REQUEST_TOKENS when unset): DistilBERT-base int8 reads
# about 1,070 tokens/s per vCPU in max-length texts (AMD EPYC Zen 3, AVX2 only: the slowest x86
# host measured), so a full budget takes about 7.7 s at any memory size, inside API Gateway's 29 s
# with room for a cold start and a slower host. `python -m handler tune` measures the budget for
# the model actually built, at each size. See docs/api.md, "Limits".
REQUEST_TOKENS_PER_VCPU = 8192


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return raw


def _prefix(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").lstrip("/")
    return value


def threads_for(memory_mb: int | None, available_cpus: int) -> int:
    """Intra-op threads: from the function's memory on Lambda, else the CPUs this process may use.

    On Lambda os.cpu_count() reports the host's cores, not the vCPU share the memory setting buys.
    """
    if memory_mb is not None:
        share = max(1, math.floor(memory_mb / MB_PER_VCPU + 0.5))
        return max(1, min(share, MAX_LAMBDA_VCPUS, available_cpus))
    return max(1, available_cpus)


def vcpu_share(memory_mb: int | None, available_cpus: int) -> float:
    """The CPU a function has: memory / 1769 on Lambda (at most six vCPUs), else this host's."""
    if memory_mb is not None:
        return min(memory_mb / MB_PER_VCPU, MAX_LAMBDA_VCPUS, available_cpus)
    return float(max(1, available_cpus))


def default_request_tokens(vcpus: float) -> int:
    """MAX_REQUEST_TOKENS when unset: the same worst-case time at every memory size."""
    return max(1, int(REQUEST_TOKENS_PER_VCPU * vcpus))


def on_lambda(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Lambda execution environment (or its emulation: SAM, the runtime client)."""
    env = os.environ if env is None else env
    return bool(env.get("AWS_LAMBDA_RUNTIME_API") or env.get("LAMBDA_TASK_ROOT"))


def default_model_dir(env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """(folder, where it came from): MODEL_DIR, else the Lambda task root's model/, else
    ./build/model."""
    env = os.environ if env is None else env
    if env.get("MODEL_DIR"):
        return Path(env["MODEL_DIR"]), "MODEL_DIR"
    if env.get("LAMBDA_TASK_ROOT"):
        return Path(env["LAMBDA_TASK_ROOT"]) / "model", "$LAMBDA_TASK_ROOT/model (MODEL_DIR unset)"
    return Path(LOCAL_MODEL_DIR), f"./{LOCAL_MODEL_DIR} (MODEL_DIR unset, not on Lambda)"


def missing_model_message(folder: Path, origin: str, model_option: bool = False) -> str:
    """Where no model was found, and how to get one; `--model` is named only where the command
    has that option (build's outputs go to MODEL_DIR for invoke, serve and Lambda)."""
    point = "point MODEL_DIR (or --model)" if model_option else "point MODEL_DIR"
    return (
        f"no built model at {folder.absolute()} ({origin}). Build one with `{BUILD_COMMAND}`, "
        f"or {point} at a built model folder."
    )


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    num_threads: int
    model_dir_origin: str = "MODEL_DIR"
    role: str = "all"
    max_texts: int = 64
    max_text_chars: int = 20_000
    max_body_bytes: int = 1_048_576
    # Tokens fed to the model per request, every text's (special tokens included, after
    # truncation); never below the model's max length (api/app.py).
    max_request_tokens: int = REQUEST_TOKENS_PER_VCPU
    max_request_tokens_origin: str = "MAX_REQUEST_TOKENS"
    api_base_path: str = "/"
    min_score: float | None = None
    input_bucket: str | None = None
    input_prefix: str = ""
    output_bucket: str | None = None
    output_prefix: str = ""
    batch_chunk_size: int = 512
    # How the batch function reads texts longer than the model: "truncate" or "windows" (an
    # object's `long-text` metadata overrides it), and at most how many windows per text.
    long_text: str = "truncate"
    max_windows_per_text: int = 64
    batch_time_margin_ms: int = 30_000
    # How far a .gz object may inflate (handler/batch/formats.py, Inflation).
    max_decompressed_bytes: int = 4 << 30
    max_compression_ratio: float = 100.0
    # The distributed path (Step Functions Distributed Map) for objects too big for one call.
    state_machine_arn: str | None = None
    distributed_min_bytes: int = 64 << 20
    shard_records: int = 5_000
    work_prefix: str = "_work/"
    # X-Ray spans (Powertools' Tracer): the template's EnableTracing sets
    # POWERTOOLS_TRACE_DISABLED=false; off by default and off outside Lambda.
    tracing: bool = False

    def __post_init__(self) -> None:
        # Here, not in from_env: a Settings made in code (tests, tools) is checked too.
        if self.role not in ROLES:
            raise ConfigError(f"FUNCTION_ROLE must be one of {', '.join(ROLES)}, got {self.role!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        memory_mb = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0) if memory else None
        threads = _int(env, "NUM_THREADS", 0, minimum=0)
        min_score_raw = env.get("MIN_SCORE", "").strip()
        min_score = _float(env, "MIN_SCORE", 0.0) if min_score_raw else None
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise ConfigError(f"MIN_SCORE must be between 0 and 1, got {min_score}")
        ratio = _float(env, "MAX_COMPRESSION_RATIO", 100.0)
        if not 1.0 <= ratio < float("inf"):
            raise ConfigError(f"MAX_COMPRESSION_RATIO must be a finite number >= 1, got {ratio}")
        model_dir, model_dir_origin = default_model_dir(env)
        vcpus = vcpu_share(memory_mb, _available_cpus())
        explicit_budget = bool(env.get("MAX_REQUEST_TOKENS", "").strip())
        budget_origin = (
            "MAX_REQUEST_TOKENS"
            if explicit_budget
            else f"MAX_REQUEST_TOKENS unset: {REQUEST_TOKENS_PER_VCPU} per vCPU x {vcpus:.2f} vCPU"
        )
        role = (env.get("FUNCTION_ROLE") or "all").strip().lower()
        settings = cls(
            role=role,
            model_dir=model_dir,
            model_dir_origin=model_dir_origin,
            num_threads=threads or threads_for(memory_mb, _available_cpus()),
            max_texts=_int(env, "MAX_TEXTS", 64),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", 20_000),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576),
            max_request_tokens=_int(env, "MAX_REQUEST_TOKENS", default_request_tokens(vcpus)),
            max_request_tokens_origin=budget_origin,
            api_base_path=env.get("API_BASE_PATH") or "/",
            min_score=min_score,
            input_bucket=env.get("INPUT_BUCKET") or None,
            input_prefix=_prefix(env, "INPUT_PREFIX"),
            output_bucket=env.get("OUTPUT_BUCKET") or None,
            output_prefix=_prefix(env, "OUTPUT_PREFIX"),
            batch_chunk_size=_int(env, "BATCH_CHUNK_SIZE", 512),
            # handler.inference.long_text's modes (tests/adapters/test_long_text_batch.py holds
            # the two equal): not imported, settings load before numpy and onnxruntime.
            long_text=_choice(env, "LONG_TEXT", ("truncate", "windows")),
            max_windows_per_text=_int(env, "MAX_WINDOWS_PER_TEXT", 64),
            batch_time_margin_ms=_int(env, "BATCH_TIME_MARGIN_MS", 30_000, minimum=0),
            max_decompressed_bytes=_int(env, "MAX_DECOMPRESSED_MB", 4096) << 20,
            max_compression_ratio=ratio,
            state_machine_arn=env.get("STATE_MACHINE_ARN") or None,
            distributed_min_bytes=_int(env, "DISTRIBUTED_MIN_MB", 64, minimum=0) << 20,
            shard_records=_int(env, "SHARD_RECORDS", 5_000),
            work_prefix=_prefix(env, "WORK_PREFIX") or "_work/",
            tracing=on_lambda(env)
            and env.get("POWERTOOLS_TRACE_DISABLED", "true").strip().lower() == "false",
        )
        settings.check_no_recursion()
        return settings

    def check_no_recursion(self) -> None:
        """Refuse a configuration in which the function's output could trigger it again.

        AWS's recursive-loop detection is a safety net, not a design:
        https://docs.aws.amazon.com/lambda/latest/dg/invocation-recursion.html
        """
        if self.output_bucket is None:
            return
        out, work = self.output_prefix, self.work_prefix
        if out and (out.startswith(work) or work.startswith(out)):
            raise ConfigError(
                f"OUTPUT_PREFIX={out!r} overlaps WORK_PREFIX={work!r}: predictions would land in "
                "the distributed path's work area, which expires and is swept. Use prefixes that "
                "do not contain each other."
            )
        same_bucket = self.input_bucket is None or self.input_bucket == self.output_bucket
        if not same_bucket:
            return
        where = f"OUTPUT_BUCKET={self.output_bucket!r}"
        if self.input_bucket is None:
            if not self.output_prefix:
                raise ConfigError(
                    f"{where} with no INPUT_BUCKET and no OUTPUT_PREFIX: output could trigger the "
                    "function again. Set INPUT_BUCKET to the triggering bucket, or use an "
                    "OUTPUT_PREFIX that the trigger does not watch."
                )
            return
        if not self.input_prefix or not self.output_prefix:
            raise ConfigError(
                f"{where} is also INPUT_BUCKET: set INPUT_PREFIX (the trigger's prefix filter) and "
                "an OUTPUT_PREFIX outside it, or write to a different bucket."
            )
        a = self.input_prefix
        for name, b in (("OUTPUT_PREFIX", self.output_prefix), ("WORK_PREFIX", self.work_prefix)):
            if a.startswith(b) or b.startswith(a):
                raise ConfigError(
                    f"{name}={b!r} overlaps INPUT_PREFIX={a!r} in the same bucket: what the "
                    "function writes there would trigger it again."
                )

    def in_work_area(self, bucket: str, key: str) -> bool:
        """True when bucket/key lies in the distributed path's work area (output bucket)."""
        return bucket == self.output_bucket and key.startswith(self.work_prefix)

    def output_could_trigger(self, bucket: str, key: str) -> bool:
        """True when an object at bucket/key is one this function wrote (output or work file)."""
        return bucket == self.output_bucket and (
            key.startswith(self.output_prefix) or key.startswith(self.work_prefix)
        )


@functools.cache
def get_settings() -> Settings:
    return Settings.from_env()

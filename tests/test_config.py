"""Settings: threads from Lambda memory, validated limits, the recursion guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.config import Settings, threads_for
from handler.errors import ConfigError


@pytest.mark.parametrize(
    ("memory", "cpus", "expected"),
    [
        (128, 8, 1),
        (1769, 8, 1),
        (3008, 8, 2),
        (3538, 8, 2),
        (10240, 8, 6),
        (10240, 2, 2),
        (None, 4, 4),
    ],
)
def test_threads_follow_lambda_memory_not_cpu_count(
    memory: int | None, cpus: int, expected: int
) -> None:
    assert threads_for(memory, cpus) == expected


def test_explicit_threads_win() -> None:
    env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240", "NUM_THREADS": "3"}
    assert Settings.from_env(env).num_threads == 3
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}).num_threads == 1


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_TEXTS": "many"}, "MAX_TEXTS"),
        ({"MAX_TEXTS": "0"}, "MAX_TEXTS"),
        ({"NUM_THREADS": "-1"}, "NUM_THREADS"),
        ({"MIN_SCORE": "2"}, "MIN_SCORE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"OUTPUT_BUCKET": "b"},
        {"OUTPUT_BUCKET": "b", "INPUT_BUCKET": "b"},
        {
            "OUTPUT_BUCKET": "b",
            "INPUT_BUCKET": "b",
            "INPUT_PREFIX": "in/",
            "OUTPUT_PREFIX": "in/out/",
        },
        {"OUTPUT_BUCKET": "b", "INPUT_BUCKET": "b", "INPUT_PREFIX": "", "OUTPUT_PREFIX": "out/"},
    ],
)
def test_output_that_could_trigger_the_function_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"trigger|INPUT_PREFIX"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"OUTPUT_BUCKET": "out", "INPUT_BUCKET": "in"},
        {"OUTPUT_BUCKET": "b", "INPUT_BUCKET": "b", "INPUT_PREFIX": "in/", "OUTPUT_PREFIX": "out/"},
        {"OUTPUT_BUCKET": "b", "OUTPUT_PREFIX": "predictions/"},
    ],
)
def test_safe_configurations_are_accepted(env: dict[str, str]) -> None:
    s = Settings.from_env(env)
    assert s.output_could_trigger(s.output_bucket or "", s.output_prefix + "x.jsonl")
    assert not s.output_could_trigger("elsewhere", "x.jsonl")


def test_function_role_is_checked() -> None:
    from handler.config import Settings
    from handler.errors import ConfigError

    assert Settings.from_env({}).role == "all"
    assert Settings.from_env({"FUNCTION_ROLE": "Batch"}).role == "batch"
    with pytest.raises(ConfigError, match="FUNCTION_ROLE must be one of all, api, batch"):
        Settings.from_env({"FUNCTION_ROLE": "worker"})


def test_an_event_for_the_other_role_names_the_role(tiny_model: Path) -> None:
    from handler.config import Settings
    from handler.errors import UnsupportedEvent
    from handler.function import LambdaFunction
    from handler.loading import get_model
    from handler.local.context import LocalContext
    from tests.conftest import load_event

    model = get_model(tiny_model, 1)
    batch = LambdaFunction(Settings(model_dir=tiny_model, num_threads=1, role="batch"), model)
    with pytest.raises(UnsupportedEvent, match=r"role is 'batch'.*the API function"):
        batch(load_event("apigw-http-classify.json"), LocalContext())
    api = LambdaFunction(Settings(model_dir=tiny_model, num_threads=1, role="api"), model)
    with pytest.raises(UnsupportedEvent, match=r"role is 'api'.*the batch function"):
        api(load_event("s3-put.json"), LocalContext())
    assert api({"warmup": True}, LocalContext())["warm"] is True
    assert batch({"warmup": True}, LocalContext())["warm"] is True

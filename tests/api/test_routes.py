"""POST /classify, GET /health, GET /model, OpenAPI; every bad input gets a clear 4xx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import call, http_event, make_handler


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=4, max_text_chars=200, max_body_bytes=2048)


def test_single_string(handler: Any) -> None:
    status, body, _ = call(handler, http_event({"inputs": "the movie was great"}))
    assert status == 200
    assert [d["label"] for d in body] == ["POSITIVE"] and set(body[0]) == {"label", "score"}


def test_list_with_top_k_none(handler: Any) -> None:
    status, body, _ = call(
        handler, http_event({"inputs": ["good", "bad"], "parameters": {"top_k": None}})
    )
    assert status == 200
    assert [[d["label"] for d in a] for a in body] == [
        ["POSITIVE", "NEGATIVE"],
        ["NEGATIVE", "POSITIVE"],
    ]


def test_function_to_apply_none_gives_logits(handler: Any) -> None:
    _, soft, _ = call(handler, http_event({"inputs": "good", "parameters": {"top_k": None}}))
    _, raw, _ = call(
        handler,
        http_event({"inputs": "good", "parameters": {"top_k": None, "function_to_apply": "none"}}),
    )
    assert sum(d["score"] for d in soft) == pytest.approx(1.0, abs=1e-5)
    assert raw[0]["score"] - raw[1]["score"] > 0 and sum(d["score"] for d in raw) != pytest.approx(
        1.0
    )


def test_options_of_the_inference_api_are_accepted(handler: Any) -> None:
    status, _, _ = call(
        handler, http_event({"inputs": "good", "options": {"wait_for_model": True}})
    )
    assert status == 200


def test_min_score_gives_explicit_uncertain(handler: Any) -> None:
    status, body, _ = call(
        handler,
        http_event({"inputs": ["the plot", "great great great"], "parameters": {"min_score": 0.8}}),
    )
    assert status == 200
    assert body[0]["label"] == "UNCERTAIN" and body[0]["score"] < 0.8
    assert body[1]["label"] == "POSITIVE"
    _, ranked, _ = call(
        handler,
        http_event(
            {"inputs": "great great great", "parameters": {"min_score": 0.1, "top_k": None}}
        ),
    )
    assert [d["label"] for d in ranked] == ["POSITIVE"]


def test_truncation_is_reported_in_a_header(handler: Any) -> None:
    status, body, headers = call(handler, http_event({"inputs": ["good", "great " * 33]}))
    assert status == 200 and len(body) == 2
    assert headers.get("x-truncated-inputs") == "1"
    _, _, plain = call(handler, http_event({"inputs": "good"}))
    assert "x-truncated-inputs" not in plain


@pytest.mark.parametrize(
    ("event_kwargs", "status", "fragment"),
    [
        ({"raw": b'{"inputs": "good"'}, 400, "not valid JSON"),
        ({"raw": b"[1, 2]"}, 400, "JSON object"),
        ({"raw": b'{"inputs": "caf\xe9"}', "b64": True}, 400, "not valid UTF-8"),
        ({"body": {}}, 422, "inputs"),
        ({"body": {"inputs": 42}}, 422, "inputs"),
        ({"body": {"inputs": ["good", 7]}}, 422, "inputs"),
        ({"body": {"inputs": []}}, 422, "empty list"),
        ({"body": {"inputs": ""}}, 422, "input 0 is empty"),
        ({"body": {"inputs": ["good", "  "]}}, 422, "input 1 is empty"),
        ({"body": {"inputs": "bad \ud800"}}, 422, "lone surrogate"),
        ({"body": {"inputs": "good", "parameters": {"top_k": 0}}}, 422, "top_k"),
        ({"body": {"inputs": "good", "parameters": {"top_k": "2"}}}, 422, "top_k"),
        (
            {"body": {"inputs": "good", "parameters": {"function_to_apply": "relu"}}},
            422,
            "function_to_apply",
        ),
        ({"body": {"inputs": "good", "parameters": {"temperature": 2}}}, 422, "temperature"),
        ({"body": {"inputs": "good", "colour": "red"}}, 422, "colour"),
        ({"body": {"inputs": "good", "parameters": {"min_score": 1.5}}}, 422, "min_score"),
        ({"body": {"inputs": ["good"] * 5}}, 413, "limit is 4"),
        ({"body": {"inputs": "x" * 201}}, 413, "input 0 is 201 characters"),
        ({"body": {"inputs": ["good"], "options": {"pad": "y" * 3000}}}, 413, "limit is 2048"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    handler: Any, event_kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    code, body, _ = call(handler, http_event(**event_kwargs))
    assert code == status
    assert fragment in body["error"] or any(fragment in str(d) for d in body.get("details", []))
    assert body["type"]


def test_error_details_do_not_echo_the_text(handler: Any) -> None:
    _, body, _ = call(handler, http_event({"inputs": ["a secret review", 7]}))
    assert "a secret review" not in str(body)


def test_health_and_model_description(handler: Any, tiny_model: Path) -> None:
    status, health, _ = call(handler, http_event(path="/health", method="GET"))
    assert status == 200 and health["loaded"] is True and len(health["manifest_sha256"]) == 64
    status, model, _ = call(handler, http_event(path="/model", method="GET"))
    assert status == 200
    assert model["labels"] == ["NEGATIVE", "POSITIVE"]
    assert model["verification"]["n"] > 0 and model["target"]["name"] == "x86-vnni"
    assert model["manifest_sha256"] == health["manifest_sha256"]


def test_openapi_and_unknown_route(handler: Any) -> None:
    status, schema, _ = call(handler, http_event(path="/openapi.json", method="GET"))
    assert status == 200 and "/classify" in schema["paths"]
    body_schema = schema["paths"]["/classify"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    name = body_schema["$ref"].rsplit("/", 1)[-1]
    request_schema = schema["components"]["schemas"][name]
    assert {"inputs", "parameters"} <= set(request_schema["properties"])
    params_ref = request_schema["properties"]["parameters"]["$ref"].rsplit("/", 1)[-1]
    assert {"top_k", "function_to_apply", "min_score"} <= set(
        schema["components"]["schemas"][params_ref]["properties"]
    )
    assert {"/health", "/model", "/"} <= set(schema["paths"])
    health = schema["paths"]["/health"]["get"]["responses"]["200"]["content"]
    health_schema = schema["components"]["schemas"]["Health"]
    assert health["application/json"]["schema"]["$ref"].endswith("/Health")
    assert {"status", "loaded", "model_id", "manifest_sha256"} <= set(health_schema["properties"])
    status, body, _ = call(handler, http_event(path="/nope", method="GET"))
    assert status == 404 and body["error"]
    status, _, _ = call(handler, http_event(path="/classify", method="GET"))
    assert status == 405


def test_the_openapi_document_is_generated_from_what_is_served(handler: Any) -> None:
    """Every served route is in the document, with the models it reads and answers; every
    model in schemas.py is used there (no dead models); error codes come from api/errors.py."""
    import pydantic

    from handler.api import errors, schemas

    status, schema, _ = call(handler, http_event(path="/openapi.json", method="GET"))
    assert status == 200
    served = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    assert served == {("/classify", "post"), ("/", "post"), ("/health", "get"), ("/model", "get")}
    models = {
        name
        for name, obj in vars(schemas).items()
        if isinstance(obj, type)
        and issubclass(obj, pydantic.BaseModel)
        and obj.__module__ == schemas.__name__
    }
    assert models == set(schema["components"]["schemas"]), (
        "a model that nothing serves, or one missing"
    )
    classify = schema["paths"]["/classify"]["post"]
    assert "Prediction" in json.dumps(classify["responses"]["200"])
    codes = {str(code) for _, code in errors.STATUS}
    assert set(classify["responses"]) == {"200"} | codes
    assert schema["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("/ModelInfo")


def test_building_the_app_does_not_import_pydantic_v1(tiny_model: Path) -> None:
    """FastAPI imports pydantic.v1 (~75 ms of a cold start) when a route has a response model;
    the app's routes declare none, so an API function's init never pays for it."""
    script = (
        "import sys; from handler.function import LambdaFunction;"
        "from handler.config import Settings;"
        "from handler.loading import get_model; from pathlib import Path;"
        f"m = Path({str(tiny_model)!r}); LambdaFunction(Settings(model_dir=m, num_threads=1, "
        "role='api'), get_model(m, 1));"
        "print('pydantic.v1' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The FastAPI app: POST /classify (the pipeline contract), POST / (the Hugging Face Inference
API's shape, for huggingface_hub's InferenceClient), GET /health, GET /model."""

from __future__ import annotations

import inspect
import time
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Route

from handler import strict_json
from handler.api import errors as api_errors
from handler.api.docs import docs_routes
from handler.api.guard import RequestGuard
from handler.api.schemas import (
    ClassifyRequest,
    ErrorBody,
    Health,
    ModelInfo,
    Prediction,
    TextPair,
)
from handler.config import Settings
from handler.errors import InputTooLarge, InvalidInput
from handler.inference import LEGACY, TextResult, postprocess
from handler.inference.classifier import Reading
from handler.inference.postprocess import TopK
from handler.inference.tokenizer import TextInput
from handler.loading import LoadedModel
from handler.observability import LOW_CONFIDENCE, record_prediction

UNCERTAIN = "UNCERTAIN"
TRUNCATED_HEADER = "x-truncated-inputs"
WINDOWS_HEADER = "x-long-text-windows"


def apply_min_score(answer: Any, min_score: float) -> Any:
    """Drop labels below min_score; an answer left empty becomes an explicit UNCERTAIN."""
    if isinstance(answer, dict):
        if answer["score"] >= min_score:
            return answer
        return {"label": UNCERTAIN, "score": answer["score"]}
    kept = [d for d in answer if d["score"] >= min_score]
    if kept:
        return kept
    best = max((d["score"] for d in answer), default=0.0)
    return [{"label": UNCERTAIN, "score": best}]


def parse_body(raw: bytes, limit: int) -> ClassifyRequest:
    if len(raw) > limit:
        raise InputTooLarge(f"body is {len(raw)} bytes; the limit is {limit} (MAX_BODY_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise api_errors.MalformedBody(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = strict_json.loads(text)
    except strict_json.JSONProblem as exc:
        raise api_errors.MalformedBody(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise api_errors.MalformedBody(
            f'body must be a JSON object like {{"inputs": ...}}, got {type(data).__name__}'
        )
    return ClassifyRequest.model_validate(data)


def check_limits(texts: list[TextInput], settings: Settings) -> None:
    if not texts:
        raise InvalidInput("inputs is an empty list: send at least one text")
    if len(texts) > settings.max_texts:
        raise InputTooLarge(
            f"{len(texts)} texts in one request; the limit is {settings.max_texts} (MAX_TEXTS)"
        )
    for i, item in enumerate(texts):
        text = item if isinstance(item, str) else max(item, key=len)  # a pair: its longer one
        if len(text) > settings.max_text_chars:
            raise InputTooLarge(
                f"input {i} is {len(text)} characters; the limit is {settings.max_text_chars} "
                "(MAX_TEXT_CHARS). Tokens past the model's max length are truncated, not refused."
            )


def check_budget(reading: Reading, texts: int, budget: int, origin: str) -> None:
    """Refuse a request whose texts, tokenised, would feed the model more than `budget` tokens:
    the work a request may ask for is bounded in tokens (what its time grows with), not only in
    texts and characters. Every window of a text read in windows counts."""
    total = sum(reading.tokens)
    if total > budget:
        how = (
            f"in {len(reading.rows)} windows, every window counted"
            if reading.windowed
            else "after truncation to its max length"
        )
        raise InputTooLarge(
            f"the {texts} text(s) of this request are {total} tokens for this model "
            f"(special tokens included, {how}); the budget is {budget} tokens per request "
            f"({origin}). Send fewer or shorter texts per request."
        )


def request_budget(settings: Settings, max_length: int) -> tuple[int, str]:
    """(tokens per request, where that came from): never below one text of the model's full
    length, so every single text can be classified."""
    if settings.max_request_tokens >= max_length:
        return settings.max_request_tokens, settings.max_request_tokens_origin
    return max_length, f"{settings.max_request_tokens_origin}, raised to the model's max length"


def _figures(results: list[TextResult], top: list[float], threshold: float, started: float) -> None:
    record_prediction(
        source="api",
        texts=len(results),
        tokens=sum(r.num_tokens for r in results),
        truncated=sum(r.truncated for r in results),
        low_confidence=sum(s < threshold for s in top),
        latency_ms=(time.perf_counter() - started) * 1000,
        rows=sum(r.windows for r in results),
    )


def create_app(settings: Settings, model: LoadedModel) -> FastAPI:
    """The app around one loaded model. Built once per execution environment, no lifespan."""
    app = FastAPI(
        title="Text classifier",
        version="1",
        description="transformers pipeline('text-classification') over HTTP, on onnxruntime.",
        # Starlette answers /classify/ with a 307 to a URL built from the Host: behind a stage
        # or base path (/prod/classify/) that URL drops the prefix and leaves the API. A
        # trailing slash is a JSON 404 that names the route instead.
        redirect_slashes=False,
        # /docs and /redoc are api/docs.py's: assets from the package, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    api_errors.install(app)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    clf = model.classifier
    budget, budget_origin = request_budget(settings, clf.config.max_length)

    async def respond(request: Request, inference_api_shape: bool) -> JSONResponse:
        # The body is parsed here, not by FastAPI, so that every malformation gets its own
        # clear message and code. The endpoint is async on purpose: Lambda serves one request
        # per environment, so a thread hop would only add latency.
        started = time.perf_counter()
        req = parse_body(await request.body(), settings.max_body_bytes)
        single = not isinstance(req.inputs, list)
        given: list[str | TextPair] = req.inputs if isinstance(req.inputs, list) else [req.inputs]
        texts: list[TextInput] = [t.item() if isinstance(t, TextPair) else t for t in given]
        check_limits(texts, settings)
        params = req.parameters
        if "top_k" in params.model_fields_set:
            top_k: TopK = params.top_k
        else:  # the pipeline: the best label; the Inference API: every label, best first
            top_k = None if inference_api_shape else LEGACY
        function = clf.resolve_function(params.function_to_apply)
        long_text = params.long_text or "truncate"
        said = clf.answer(
            texts,
            strict=True,
            function_to_apply=function,
            long_text=long_text,
            admit=lambda reading: check_budget(reading, len(texts), budget, budget_origin),
        )
        results = said.results
        answers: list[Any] = said.labelled(top_k)
        min_score = params.min_score if params.min_score is not None else settings.min_score
        if min_score is not None:
            answers = [apply_min_score(a, min_score) for a in answers]
        # The Inference API answers a list of labels per text, always ([[...]] for one text:
        # huggingface_hub's InferenceClient takes [0]); /classify answers as the pipeline.
        # /classify answers as the pipeline: one string -> [answer], one pair -> answer.
        wrap = isinstance(req.inputs, str)
        body = answers if inference_api_shape else postprocess.shape(answers, single, wrap)
        top = [float(row.max()) for row in said.scores]
        _figures(results, top, min_score if min_score is not None else LOW_CONFIDENCE, started)
        truncated = [str(i) for i, r in enumerate(results) if r.truncated]
        headers = {TRUNCATED_HEADER: ",".join(truncated)} if truncated else {}
        if long_text == "windows":  # windows read per text, in input order (1: read whole)
            headers[WINDOWS_HEADER] = ",".join(str(r.windows) for r in results)
        return JSONResponse(body, headers=headers or None)

    async def classify(request: Request) -> JSONResponse:
        return await respond(request, inference_api_shape=False)

    async def root(request: Request) -> JSONResponse:  # the Hugging Face Inference API's shape
        return await respond(request, inference_api_shape=True)

    # HEAD too: load balancers and uptime checks ask with HEAD (headers, no body).
    async def health_head(request: Request) -> Response:
        return Response(status_code=200, media_type="application/json")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "loaded": True,
                "model_id": model.model_id,
                "manifest_sha256": model.manifest_sha256,
                "load_seconds": round(model.load_seconds, 3),
            }
        )

    async def describe(request: Request) -> JSONResponse:
        m = model.manifest
        return JSONResponse(
            {
                "model_id": model.model_id,
                "labels": [clf.id2label[i] for i in sorted(clf.id2label)],
                "problem_type": clf.config.problem_type,
                "max_length": clf.config.max_length,
                "graph_inputs": list(clf.input_names),
                "batching": clf.config.batching,
                "source": m.get("source"),
                "target": m.get("target"),
                "quantization": m.get("quantization"),
                "verification": m.get("verification"),
                "built_at": m.get("built_at"),
                "manifest_sha256": model.manifest_sha256,
                "limits": {
                    "max_texts": settings.max_texts,
                    "max_text_chars": settings.max_text_chars,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_request_tokens": budget,
                },
            }
        )

    served = [
        DocumentedRoute(
            "/classify",
            classify,
            "POST",
            summary="Classify",
            description="transformers pipeline('text-classification') semantics: the best label "
            "per text, or the top_k best.",
            body=ClassifyRequest,
            response=list[Prediction] | list[list[Prediction]],
        ),
        # POST / speaks the Hugging Face Inference API (as an Inference Endpoint does), so
        # `InferenceClient(model=API_URL).text_classification(text)` works unchanged.
        DocumentedRoute(
            "/",
            root,
            "POST",
            summary="Classify (Hugging Face Inference API shape)",
            description="What huggingface_hub's InferenceClient.text_classification expects: one "
            "list of {label, score} per text, best first; every label unless top_k is given.",
            body=ClassifyRequest,
            response=list[list[Prediction]],
            operation_id="inference_api",
        ),
        Route("/health", health_head, methods=["HEAD"], include_in_schema=False),
        DocumentedRoute("/health", health, "GET", summary="Health", response=Health),
        DocumentedRoute("/model", describe, "GET", summary="Model", response=ModelInfo),
    ]
    # Ahead of FastAPI's own (/openapi.json): matched in order, as before.
    app.router.routes[:0] = served + docs_routes(app.title, app.openapi_url or "/openapi.json")

    def openapi() -> dict[str, Any]:
        # Generated by FastAPI from the routes' own declarations, on the first request for it:
        # declaring models on FastAPI routes at init would import pydantic.v1 (~75 ms of every
        # cold start of the API function), for a document few callers ever ask for.
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[r.documented() for r in app.routes if isinstance(r, DocumentedRoute)],
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class DocumentedRoute(Route):
    """A route served as plain Starlette (no per-request dependency solving or response
    validation: the body is parsed by `answer`, the HTTP path's 1 ms budget is kept) that
    carries the models it reads and answers, so FastAPI can generate its OpenAPI entry. Error
    responses come from api/errors.py, the one place status codes live."""

    def __init__(
        self,
        path: str,
        endpoint: Any,
        method: str,
        *,
        summary: str,
        response: Any,
        description: str | None = None,
        body: type[BaseModel] | None = None,
        operation_id: str | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=[method], include_in_schema=False)
        self.method, self.summary, self.description = method, summary, description
        self.body, self.response = body, response
        self.operation_id = operation_id or endpoint.__name__

    def documented(self) -> APIRoute:
        """The same route as FastAPI would declare it: request body and responses typed by the
        models; the endpoint is never called."""

        async def endpoint(**_: Any) -> None:
            raise NotImplementedError  # documentation only: the Starlette route serves

        params = []
        if self.body is not None:
            params.append(
                inspect.Parameter(
                    "body", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[self.body, Body()]
                )
            )
        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        codes = api_errors.documented_statuses(with_body=self.body is not None)
        return APIRoute(
            self.path,
            endpoint,
            methods=[self.method],
            summary=self.summary,
            description=self.description or "",
            operation_id=self.operation_id,
            response_model=self.response,
            responses={code: {"model": ErrorBody, "description": why} for code, why in codes},
        )

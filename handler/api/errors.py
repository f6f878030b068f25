"""Exceptions -> status codes and JSON error bodies: the only place status codes live."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from handler import errors
from handler.observability import logger


class MalformedBody(errors.InvalidInput):
    """The body is not UTF-8 JSON."""


class BadPath(errors.InvalidInput):
    """The request path has dot segments."""


class UnsupportedContentEncoding(errors.InvalidInput):
    """The body comes in a Content-Encoding this API does not decode."""


STATUS: list[tuple[type[Exception], int]] = [
    (MalformedBody, 400),
    (BadPath, 400),
    (UnsupportedContentEncoding, 415),
    (errors.InputTooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.ArtifactError, 503),
]


def documented_statuses(with_body: bool) -> list[tuple[int, str]]:
    """The error statuses a route can answer, each described by the exceptions mapped to it
    (their docstrings), for the OpenAPI document. Routes without a body cannot be over a body
    limit or malformed; every route can meet a bad path or a model that failed to load."""
    seen: dict[int, list[str]] = {}
    for cls, code in STATUS:
        seen.setdefault(code, []).append((cls.__doc__ or cls.__name__).strip())
    body_only = {413, 415, 422}
    return sorted(
        (c, " Or: ".join(why)) for c, why in seen.items() if with_body or c not in body_only
    )


def status_for(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def body(
    exc: Exception, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"error": message, "type": type(exc).__name__}
    if details is not None:
        out["details"] = details
    return out


# An error body stays small whatever the input: a list of a million bad items (or thousands of
# unknown keys) is one error each to pydantic, and an answer past Lambda's 6 MB response limit
# reaches the caller as a 502. The first few are shown, and how many there were.
MAX_DETAILS = 10
MAX_LOC_CHARS = 100


def _loc(loc: Any) -> list[Any]:
    return [p if isinstance(p, int) else str(p)[:MAX_LOC_CHARS] for p in loc]


def _validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    # Keep loc/msg/type; drop "input", which would echo the caller's text.
    return [
        {
            "loc": _loc(e.get("loc", ())),
            "msg": str(e.get("msg", ""))[:200],
            "type": e.get("type", ""),
        }
        for e in exc.errors()[:MAX_DETAILS]
    ]


def _validation_body(exc: ValidationError | RequestValidationError, message: str) -> dict[str, Any]:
    out = body(exc, message, _validation_details(exc))
    total = len(exc.errors()) if isinstance(exc, RequestValidationError) else exc.error_count()
    if total > MAX_DETAILS:
        out["details_total"] = total  # only the first MAX_DETAILS are listed
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ClassifierError)
    async def domain(_: Request, exc: errors.ClassifierError) -> JSONResponse:
        code = status_for(exc)
        if code >= 500:
            logger.exception("request failed")
        return JSONResponse(body(exc, str(exc)), status_code=code)

    @app.exception_handler(ValidationError)
    async def validation(_: Request, exc: ValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])[:200] or "body"
        return JSONResponse(
            _validation_body(exc, f"invalid request: {where}: {first['msg']}"), status_code=422
        )

    @app.exception_handler(RequestValidationError)
    async def request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc, "invalid request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            path = request.url.path
            bare = path.rstrip("/")
            if bare and bare != path and any(getattr(r, "path", "") == bare for r in app.routes):
                hint = f" (a trailing slash: the route is {bare})"
            else:
                hint = _base_path_hint(app, path)
            message = f"no route {request.method} {path}{hint}"
        return JSONResponse(
            {"error": message, "type": "HTTPException"}, status_code=exc.status_code
        )


def _base_path_hint(app: FastAPI, path: str) -> str:
    """A custom domain's base path mapping (api.example.com/sentiment -> this API) reaches the
    function with the prefix in the path; say so when stripping one would find a route."""
    for route in app.routes:
        route_path = getattr(route, "path", "")
        prefix = path[: -len(route_path)] if route_path not in ("", "/") else ""
        if path.endswith(route_path) and prefix.strip("/"):
            return (
                f". Behind a custom domain with a base path mapping? Set API_BASE_PATH={prefix} "
                f"and {path} is served as {route_path}"
            )
    return ""

"""GET /docs (Swagger UI) and /redoc, with their scripts and styles served by the function itself
(from the fastapi-offline package), never from a CDN: a function in a VPC without internet, or
a browser on a closed network, still shows them. Every URL in the pages is relative, so they
work under any API Gateway stage or base path (`/prod/docs` loads `/prod/openapi.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "docs-assets"  # relative: the pages sit beside it, at /docs and /redoc


def docs_routes(title: str, openapi_url: str) -> list[BaseRoute]:
    spec = openapi_url.lstrip("/")

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=spec,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=spec,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    assets: Any = StaticFiles(directory=ASSETS)
    return [
        Route("/docs", swagger, methods=["GET"], include_in_schema=False),
        Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
        Mount(f"/{ASSETS_PATH}", app=assets, name="docs-assets"),
    ]

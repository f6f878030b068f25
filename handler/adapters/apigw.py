"""API Gateway (REST v1, HTTP v2), ALB and Function URL events -> the FastAPI app via Mangum."""

from __future__ import annotations

from mangum import Mangum

from handler.api import create_app
from handler.config import Settings
from handler.runtime import LoadedModel


def create_http_handler(settings: Settings, model: LoadedModel) -> Mangum:
    # lifespan="off": Mangum would run the ASGI lifespan on every invocation (Kludex/mangum#342);
    # the model is loaded once, at import, instead.
    return Mangum(
        create_app(settings, model),
        lifespan="off",
        api_gateway_base_path=settings.api_base_path,
    )

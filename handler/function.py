"""Function: routes any supported event to its adapter; everything heavy is built once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from handler.adapters import router
from handler.adapters.apigw import create_http_handler
from handler.adapters.s3_batch import BatchAdapter
from handler.adapters.s3_store import S3Store, invoke_self
from handler.batch.job import Store
from handler.config import Settings, get_settings
from handler.observability import logger, metrics
from handler.runtime import LoadedModel, model_for

Handler = Callable[[dict[str, Any], Any], Any]


class Function:
    """Everything heavy, built once: model, app, Mangum instance, S3 client."""

    def __init__(self, settings: Settings, model: LoadedModel, store: Store | None = None) -> None:
        self.settings = settings
        self.model = model
        self.http = create_http_handler(settings, model)
        store = store or S3Store()
        if settings.output_bucket and isinstance(store, S3Store):
            store.client  # noqa: B018  the batch function builds its S3 client in the init phase
        self.batch = BatchAdapter(settings, model, store, invoke_self)
        self.routes: dict[str, Handler] = {
            router.HTTP: self.http,
            router.S3: self.batch.handle_s3,
            router.SQS: self.batch.handle_sqs,
            router.SNS: self.batch.handle_sns,
            router.EVENTBRIDGE: self.batch.handle_eventbridge,
            router.CONTINUATION: self.batch.handle_continuation,
            router.WARMUP: self.warmup,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Function:
        return cls(settings, model_for(settings))

    def warmup(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        prediction = self.model.classifier.predict("warm up")
        return {
            "warm": True,
            "model_id": self.model.model_id,
            "load_seconds": round(self.model.load_seconds, 3),
            "prediction_ms": round((time.perf_counter() - started) * 1000, 3),
            "labels": sorted(self.model.classifier.id2label.values()),
            "sample": prediction,
        }

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        return self.routes[router.kind_of(event)](event, context)


def make_lambda_handler(function: Function) -> Handler:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict[str, Any], context: Any) -> Any:
        return function(event, context)

    return lambda_handler  # type: ignore[no-any-return]


def create_local_app() -> Any:
    """The same FastAPI app, for uvicorn (python -m handler serve)."""
    from handler.api import create_app

    settings = get_settings()
    return create_app(settings, model_for(settings))

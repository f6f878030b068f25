"""LambdaFunction: routes any supported event to its adapter; everything heavy is built once.

A function's role (FUNCTION_ROLE) decides what it imports and builds at init: `api` the HTTP
stack (FastAPI, Mangum) and nothing of S3; `batch` the S3 path and none of the HTTP stack;
`all` (the default, e.g. for local tools) both. An event for the other role is refused with an
error that names the role.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handler.adapters import router
from handler.config import Settings, get_settings
from handler.errors import UnsupportedEvent
from handler.loading import LoadedModel, model_for
from handler.observability import logger, metrics

if TYPE_CHECKING:
    from mangum.types import LambdaContext

    from handler.batch.shards import ShardStore

Handler = Callable[[dict[str, Any], "LambdaContext"], Any]


class LambdaFunction:
    """Everything heavy, built once: model, and the role's app (Mangum) or batch adapter."""

    def __init__(
        self, settings: Settings, model: LoadedModel, store: ShardStore | None = None
    ) -> None:
        self.settings = settings
        self.model = model
        self.role = settings.role
        self.routes: dict[str, Handler] = {router.WARMUP: self.warmup}
        if self.role in ("api", "all"):
            from handler.adapters.apigw import create_http_handler

            self.http = create_http_handler(settings, model)
            self.routes[router.HTTP] = self.http
        if self.role in ("batch", "all"):
            from handler.adapters.s3_batch import BatchAdapter
            from handler.adapters.s3_store import S3Store

            # The S3 client (boto3, ~0.2 s to import) is made on the first S3 event, not at init.
            self.batch = BatchAdapter(settings, model, store or S3Store())
            self.routes.update(
                {
                    router.S3: self.batch.handle_s3,
                    router.SQS: self.batch.handle_sqs,
                    router.SNS: self.batch.handle_sns,
                    router.EVENTBRIDGE: self.batch.handle_eventbridge,
                    router.DISTRIBUTED: self.batch.handle_distributed,
                }
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> LambdaFunction:
        return cls(settings, model_for(settings))

    def warmup(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        started = time.perf_counter()
        clf = self.model.classifier
        # Not refused even where the model's vocabulary lacks these words: warming the path up
        # is the point, the answer is only shown.
        prediction = clf.answer(["warm up"]).labelled()
        return {
            "warm": True,
            "model_id": self.model.model_id,
            "load_seconds": round(self.model.load_seconds, 3),
            "prediction_ms": round((time.perf_counter() - started) * 1000, 3),
            "labels": sorted(self.model.classifier.id2label.values()),
            "sample": prediction,
        }

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        kind = router.kind_of(event)
        route = self.routes.get(kind)
        if route is None:
            other = "the batch function" if kind in router.BATCH_KINDS else "the API function"
            raise UnsupportedEvent(
                f"a {kind} event reached a function whose role is {self.role!r} "
                f"(FUNCTION_ROLE): send it to {other}, or use FUNCTION_ROLE=all"
            )
        return route(event, context)


def make_lambda_handler(function: LambdaFunction) -> Handler:
    def handle(event: dict[str, Any], context: LambdaContext) -> Any:
        return function(event, context)

    if function.settings.tracing:  # X-Ray: the invocation, the core's stages, every S3 call
        from handler.observability import start_tracing

        tracer, span = start_tracing()
        function.model.classifier.trace = span
        handle = tracer.capture_lambda_handler(handle)

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
        return handle(event, context)

    return lambda_handler  # type: ignore[no-any-return]


def create_local_app() -> Any:
    """The same FastAPI app, for uvicorn (python -m handler serve)."""
    from handler.api import create_app

    settings = get_settings()
    return create_app(settings, model_for(settings))

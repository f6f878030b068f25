"""Structured logging and CloudWatch EMF metrics (Powertools for AWS Lambda). Never logs input text.

Powertools reads its own POWERTOOLS_* variables (service name, namespace, log level); the
defaults below apply when they are unset.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from handler.config import on_lambda

SERVICE = "text-classifier"
NAMESPACE = "TextClassifier"

# On Lambda both streams reach CloudWatch; Powertools writes to stdout. Elsewhere stdout belongs
# to the command's result (`python -m handler invoke | jq`), so logs go to stderr (the CLI also
# routes the EMF metric lines there: Powertools prints them).
logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE),
    stream=sys.stdout if on_lambda() else sys.stderr,
)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE))

# A health check or warm-up publishes no metric but the cold start; that is expected, not news.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

__all__ = ["MetricUnit", "logger", "metrics", "record_prediction", "start_tracing"]


def start_tracing() -> tuple[Any, Callable[[str], AbstractContextManager[Any]]]:
    """Powertools' Tracer (it patches boto3, so S3 reads and writes are subsegments) and a span
    factory for the core's stages. Made only when tracing is on: aws_xray_sdk takes ~0.6 s to
    import, which no cold start of an untraced function should pay."""
    from aws_lambda_powertools import Tracer

    tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE))

    def span(name: str) -> AbstractContextManager[Any]:
        return tracer.provider.in_subsegment(name)

    return tracer, span


# Without a min_score, a top score under this counts as low confidence (the LowConfidence metric,
# the summary's low_confidence count).
LOW_CONFIDENCE = 0.7


def record_prediction(
    *,
    source: str,
    texts: int,
    tokens: int,
    truncated: int,
    low_confidence: int,
    latency_ms: float,
    rows: int | None = None,
) -> None:
    """One request's or one chunk's figures, as EMF metrics (flushed by log_metrics). `rows`:
    the sequences the model ran, one per text and one per window of a text read in windows
    (None: as many as texts)."""
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=latency_ms)
    metrics.add_metric(name="Texts", unit=MetricUnit.Count, value=texts)
    metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=tokens)
    metrics.add_metric(name="Truncations", unit=MetricUnit.Count, value=truncated)
    metrics.add_metric(name="LowConfidence", unit=MetricUnit.Count, value=low_confidence)
    metrics.add_metric(name="Rows", unit=MetricUnit.Count, value=texts if rows is None else rows)
    # DEBUG: the EMF line above already carries these figures; a second line per request would
    # cost ~35 us of the HTTP path's budget (LOG_LEVEL=DEBUG shows it).
    logger.debug(
        "classified",
        extra={
            "source": source,
            "texts": texts,
            "tokens": tokens,
            "truncated": truncated,
            "low_confidence": low_confidence,
            "rows": texts if rows is None else rows,
            "latency_ms": round(latency_ms, 3),
        },
    )

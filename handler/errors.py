"""Domain exceptions. No HTTP or AWS knowledge: status codes are chosen in handler/api/errors.py."""

from __future__ import annotations


class ClassifierError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(ClassifierError):
    """The environment or settings are invalid; the message names the variable."""


class ArtifactError(ClassifierError):
    """A model folder is missing files, or its files disagree with its manifest."""


class InvalidInput(ClassifierError):
    """A request or record is malformed: wrong type, empty text, unknown parameter."""


class InputTooLarge(InvalidInput):
    """A body, a text or a list of texts is over a configured limit."""


class UnsupportedEvent(ClassifierError):
    """lambda_handler received an event shape it does not route."""


class ObjectChanged(ClassifierError):
    """An S3 object no longer matches the event that announced it."""


class BuildError(ClassifierError):
    """The build could not produce an artifact (fetch, export or quantisation failed)."""


class GateFailed(BuildError):
    """The quantised graph failed verification against the fp32 graph."""


class ObjectsFailed(ClassifierError):
    """Some objects of a notification with several failed; every other one was still tried."""


class OutOfTime(ClassifierError):
    """The invocation's time budget ran out with work still to do (checked between runs)."""


class DataFault(ClassifierError):
    """An object's bytes cannot be read further (bad gzip, malformed CSV header): not retryable."""


class MalformedEvent(ClassifierError):
    """An envelope (SNS, SQS) of a supported event source is malformed; the message says how."""


class ModelChanged(ClassifierError):
    """A distributed job was planned for another model than this function serves: its shards
    would mix two models' answers, so it stops (not retryable; re-run or redrive after deploying
    one model)."""


class ShardMismatch(ClassifierError):
    """A shard read a different number of records than its plan counted (not retryable)."""

"""The context object Lambda passes to a handler, for running it anywhere else."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalContext:
    """The attributes of Lambda's context object that this project and Powertools read."""

    function_name: str = "text-classifier-local"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_s: float = 900.0
    _start: float = field(default_factory=time.monotonic)
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/text-classifier-local"
    log_stream_name: str = "local"
    identity: Any = None  # mobile apps only (Cognito)
    client_context: Any = None  # mobile apps only

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout_s - (time.monotonic() - self._start)) * 1000)

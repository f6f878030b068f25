"""A Lambda Runtime API on 127.0.0.1, for running the function as Lambda runs it: under
awslambdaric (`python -m awslambdaric handler.lambda_handler`, the image's CMD) instead of a
direct call. Tests and the cold-start benchmark use it; the function never imports it.

It speaks the Runtime API's 2018-06-01 routes (next, response, error, init/error) with the
headers awslambdaric reads (request id, deadline, function ARN, trace id, Content-Type).
https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:text-classifier"


def _trace_id() -> str:
    root = f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=0"


@dataclass
class Outcome:
    kind: str  # "response" | "error"
    body: Any
    error_type: str | None = None


@dataclass
class Invocation:
    request_id: str
    event: Any
    deadline_ms: int


@dataclass
class RuntimeAPI:
    """Start with start(); the runtime's address for AWS_LAMBDA_RUNTIME_API is `address`."""

    function_arn: str = FUNCTION_ARN
    pending: queue.Queue[Invocation] = field(default_factory=queue.Queue)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    init_errors: list[Any] = field(default_factory=list)
    next_calls: list[float] = field(default_factory=list)  # time.time() of each GET /next
    changed: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        assert self.server is not None, "start() first"
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> RuntimeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm on, the
            # client's delayed ACK holds the body back ~40 ms per response.
            disable_nagle_algorithm = True

            def handle(self) -> None:
                with contextlib.suppress(ConnectionError):  # the runtime stopped mid-poll
                    super().handle()

            def _body(self) -> bytes:
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(
                self, code: int, payload: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._send(404)
                    return
                with api.changed:
                    api.next_calls.append(time.time())
                    api.changed.notify_all()
                item = api.pending.get()
                self._send(
                    200,
                    json.dumps(item.event).encode(),
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": item.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(item.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                        "Lambda-Runtime-Trace-Id": _trace_id(),
                    },
                )

            def do_POST(self) -> None:
                body = self._body()
                path = self.path
                try:
                    payload: Any = json.loads(body) if body else None
                except ValueError:
                    payload = body.decode("utf-8", "replace")
                with api.changed:
                    if path == f"{PREFIX}/init/error":
                        api.init_errors.append(payload)
                    elif path.startswith(f"{PREFIX}/invocation/"):
                        request_id, _, kind = path[len(f"{PREFIX}/invocation/") :].partition("/")
                        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                        api.outcomes[request_id] = Outcome(kind, payload, error_type)
                    else:
                        self._send(404)
                        return
                    api.changed.notify_all()
                self._send(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def submit(self, event: Any, time_left_s: float = 900.0) -> str:
        """Queue an invocation whose deadline is `time_left_s` from now; returns its id."""
        request_id = str(uuid.uuid4())
        deadline = int((time.time() + time_left_s) * 1000)
        self.pending.put(Invocation(request_id, event, deadline))
        return request_id

    def _wait(self, ready: Any, timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        with self.changed:
            while (value := ready()) is None:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self.changed.wait(left)
            return value

    def result(self, request_id: str, timeout: float = 60.0) -> Outcome:
        out: Outcome = self._wait(lambda: self.outcomes.get(request_id), timeout, "outcome")
        return out

    def first_next(self, timeout: float = 60.0) -> float:
        """time.time() of the runtime's first GET /next: the end of the init phase."""
        t: float = self._wait(
            lambda: self.next_calls[0] if self.next_calls else None, timeout, "/next"
        )
        return t

    def init_error(self, timeout: float = 60.0) -> Any:
        return self._wait(
            lambda: self.init_errors[0] if self.init_errors else None, timeout, "init error"
        )

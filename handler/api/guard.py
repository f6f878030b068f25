"""What is refused before any route runs: a body in a Content-Encoding this API does not decode
(415, naming it), a path with dot segments (400: `/x/../classify` is not normalised into a
route, nor offered as a base path), and a body over MAX_BODY_BYTES (413), refused on its
Content-Length or as soon as the bytes received pass the limit, never buffered whole first."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handler import strict_json
from handler.api import errors as api_errors
from handler.errors import ClassifierError, InputTooLarge

IDENTITY = ("", "identity")


def dot_segments(path: str) -> bool:
    return "/." in path and any(seg in (".", "..") for seg in path.split("/"))


def too_large(limit: int, size: int | None = None) -> InputTooLarge:
    said = f"{size} bytes" if size is not None else f"over {limit} bytes"
    return InputTooLarge(f"body is {said}; the limit is {limit} (MAX_BODY_BYTES)")


def refusal(exc: ClassifierError) -> tuple[int, bytes]:
    """(status, JSON body) for an error refused before the app: codes from api/errors.py."""
    body = strict_json.dumps(api_errors.body(exc, str(exc))).encode()
    return api_errors.status_for(exc), body


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Disconnected(Exception):
    """The client went away before its body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as more than `limit` bytes have arrived: at most
    `limit` bytes are ever held. Disconnected if the client goes away first."""
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def bounded_body(scope: Scope, receive: Receive, limit: int) -> bytes | InputTooLarge:
    """The body, or the error when the declared or the streamed size passes `limit`:
    what both local servers and the app do before anything else. Disconnected passes through."""
    size = declared_length(scope)
    if size is not None and size > limit:
        return too_large(limit, size)
    body = await read_body(receive, limit)
    return too_large(limit) if body is None else body


class RequestGuard:
    """A pure ASGI middleware: one look at the path and headers, and the body read once under
    the limit, then handed on as one message."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is not None:
            await self.refuse(send, problem)
            return
        if self.max_body_bytes is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await bounded_body(scope, receive, self.max_body_bytes)
        except Disconnected:
            return  # nobody to answer
        if isinstance(body, InputTooLarge):
            await self.refuse(send, body)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def problem(scope: Scope) -> ClassifierError | None:
        path = scope.get("path", "")
        if dot_segments(path):
            return api_errors.BadPath(f"path {path[:200]!r} has dot segments ('.' or '..')")
        for name, value in scope.get("headers", ()):
            if name == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
                if encoding not in IDENTITY:
                    return api_errors.UnsupportedContentEncoding(
                        f"Content-Encoding {encoding[:40]!r} is not supported: send the JSON "
                        "body uncompressed"
                    )
        return None

    @staticmethod
    async def refuse(send: Send, exc: ClassifierError) -> None:
        status, body = refusal(exc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

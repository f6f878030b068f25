"""What is refused before any route runs: a body in a Content-Encoding this API does not decode
(415, naming it) and a path with dot segments (400: `/x/../classify` is not normalised into a
route, nor offered as a base path)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from handler import strict_json

IDENTITY = ("", "identity")


def dot_segments(path: str) -> bool:
    return "/." in path and any(seg in (".", "..") for seg in path.split("/"))


class RequestGuard:
    """A pure ASGI middleware: one look at the path and headers, nothing per byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.problem(scope)
            if problem is not None:
                await self.refuse(send, *problem)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def problem(scope: Scope) -> tuple[int, str, str] | None:
        path = scope.get("path", "")
        if dot_segments(path):
            return 400, "BadPath", f"path {path[:200]!r} has dot segments ('.' or '..')"
        for name, value in scope.get("headers", ()):
            if name == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
                if encoding not in IDENTITY:
                    return (
                        415,
                        "UnsupportedContentEncoding",
                        f"Content-Encoding {encoding[:40]!r} is not supported: send the JSON "
                        "body uncompressed",
                    )
        return None

    @staticmethod
    async def refuse(send: Send, status: int, kind: str, message: str) -> None:
        body: Any = strict_json.dumps({"error": message, "type": kind}).encode()
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

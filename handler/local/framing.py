"""The local servers' guard against a request whose body length is framed twice.

A request with both `Content-Length` and `Transfer-Encoding` is how request smuggling starts:
RFC 9112 section 6.1 lets a server treat it as an error, and it must close the connection after
answering. uvicorn's h11 reads such a body as chunked and keeps the connection open; this ASGI
wrapper answers 400 and closes instead. (API Gateway, ALB and Function URLs never pass such a
request to Lambda: this is for `python -m handler serve` only.)
"""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
ASGIApp = Any

MESSAGE = (
    "the request has both Content-Length and Transfer-Encoding: its body length is ambiguous "
    "(RFC 9112 section 6.1); send one of them"
)


def reject_ambiguous_framing(app: ASGIApp) -> ASGIApp:
    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            names = {name.lower() for name, _ in scope.get("headers", [])}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = json.dumps({"error": MESSAGE, "type": "MalformedBody"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded

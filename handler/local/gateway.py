"""`serve --through-lambda`: HTTP in, API Gateway HTTP API events through the function, HTTP out."""

from __future__ import annotations

import json
import uuid
from typing import Any

from handler.local.context import LocalContext


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, host: str
) -> dict[str, Any]:
    """The event API Gateway's HTTP API (payload format 2.0) sends for one request."""
    import base64
    import datetime

    path, _, query = target.partition("?")
    now = datetime.datetime.now(datetime.UTC)
    lowered: dict[str, str] = {}
    cookies = []
    for name, value in headers.items():
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        # API Gateway joins repeated headers with commas.
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    try:
        text: str | None = body.decode("utf-8") if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if cookies:
        event["cookies"] = cookies
    if text is not None:
        event["body"] = text
    return event


def lambda_gateway(handler: Any, max_body_bytes: int) -> Any:
    """An ASGI app that turns each HTTP request into an HTTP API event for `handler` and its
    response back into HTTP, as `sam local start-api` does, without Docker. Served by uvicorn,
    so HTTP/1.1 framing (keep-alive, HEAD, chunked bodies, bad Content-Length) is a real
    server's; a body over `max_body_bytes` is refused on its Content-Length or while it streams,
    as API Gateway refuses payloads over its own limit. One request at a time through the
    function, like one Lambda execution environment."""
    import asyncio
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from handler.api.guard import Disconnected, bounded_body, refusal
    from handler.errors import InputTooLarge

    # The execution environment: one thread, with the event loop Mangum expects of Lambda's
    # main thread; requests queue for it.
    environment = ThreadPoolExecutor(
        max_workers=1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop())
    )

    async def respond(
        send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, head: bool
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def refuse(send: Any, status: int, body: bytes, head: bool) -> None:
        await respond(send, status, [(b"content-type", b"application/json")], body, head)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        head = scope["method"] == "HEAD"
        try:
            body = await bounded_body(scope, receive, max_body_bytes)
        except Disconnected:
            return  # nobody to answer
        if isinstance(body, InputTooLarge):
            await refuse(send, *refusal(body), head)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            joiner = "; " if name.lower() == "cookie" else ","
            headers[name] = f"{headers[name]}{joiner}{value}" if name in headers else value
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        host = headers.get("host", "localhost")
        event = http_api_event(
            scope["method"], f"{target}?{query}" if query else target, headers, body, host
        )
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(environment, handler, event, LocalContext())
        except Exception as exc:  # Lambda's answer to a function error: 502 from the API
            error = {"message": "Internal Server Error", "error": str(exc)}
            await refuse(send, 502, json.dumps(error).encode(), head)
            return
        raw = response.get("body") or ""
        payload = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        out = [
            (str(name).lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in (response.get("headers") or {}).items()
            if str(name).lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        out += [(b"set-cookie", c.encode("latin-1")) for c in response.get("cookies") or []]
        await respond(send, int(response.get("statusCode", 200)), out, payload, head)

    return app

"""API Gateway (REST v1, HTTP v2), ALB and Function URL events -> the FastAPI app via Mangum."""

from __future__ import annotations

import base64
import binascii
import copy
import json
from typing import TYPE_CHECKING, Any

from mangum import Mangum
from mangum.types import Response

from handler.api import create_app
from handler.config import Settings
from handler.loading import LoadedModel

if TYPE_CHECKING:
    from mangum.types import LambdaContext  # the Protocol of Lambda's context object


class HttpAdapter(Mangum):
    """Mangum, with two event shapes it cannot read answered instead of raised:

    - `isBase64Encoded: true` with a body that is not base64: Mangum decodes it leniently and
      raises on bad padding (a traceback, a 502); here it is a 400 that says so.
    - a `Host` that is an IPv6 literal (`[2001:db8::1]:443`, as ALB and Function URLs pass it):
      Mangum splits the header on ':' and raises; here the request is answered, the server
      address read from the brackets.
    """

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        handler = self.infer(event, context)
        if event.get("isBase64Encoded") and not _is_base64(event.get("body")):
            return handler(_bad_request("the body is marked isBase64Encoded but is not base64"))
        try:
            scope = handler.scope  # Mangum parses the Host header here
        except ValueError:
            return self._with_ipv6_host(event, context)
        # As Mangum's own __call__ with lifespan="off" (the only mode this project uses).
        return _run(self, handler, scope)

    def _with_ipv6_host(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # ALB with multi-value headers on sends multiValueHeaders (lists) instead of headers.
        field = "multiValueHeaders" if event.get("multiValueHeaders") else "headers"
        headers = event.get(field) or {}
        name = next((k for k in headers if k.lower() == "host"), None)
        value = headers.get(name, "") if name is not None else ""
        host = str(value[-1] if isinstance(value, list) and value else value)
        server = _ipv6_server(host)
        if server is None or name is None:
            return self.infer(event, context)(_bad_request("the Host header is malformed"))
        plain = copy.copy(event)  # parsed by Mangum with a placeholder host, then put back
        plain[field] = {**headers, name: ["ipv6-host"] if field != "headers" else "ipv6-host"}
        handler = self.infer(plain, context)
        scope = handler.scope
        scope["server"] = server
        scope["headers"] = [
            (k, host.encode("latin-1")) if k == b"host" else (k, v) for k, v in scope["headers"]
        ]
        return _run(self, handler, scope)


def _run(adapter: Mangum, handler: Any, scope: Any) -> dict[str, Any]:
    from mangum.protocols import HTTPCycle

    response = HTTPCycle(scope, handler.body)(adapter.app)
    result: dict[str, Any] = handler(response)
    return result


def _is_base64(body: object) -> bool:
    if body is None or body == "":
        return True
    if not isinstance(body, str):
        return False
    try:
        base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _ipv6_server(host: str) -> tuple[str, int] | None:
    """(address, port) of `[addr]` or `[addr]:port`; None when `host` is neither."""
    if not host.startswith("["):
        return None
    address, _, rest = host[1:].partition("]")
    if not address or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
        return None
    return address, int(rest[1:]) if rest else 443


def _bad_request(message: str) -> Response:
    body = json.dumps({"error": message, "type": "MalformedBody"}).encode()
    return {
        "status": 400,
        "headers": [[b"content-type", b"application/json"], [b"content-length", b"%d" % len(body)]],
        "body": body,
    }


def create_http_handler(settings: Settings, model: LoadedModel) -> Mangum:
    # lifespan="off": Mangum would run the ASGI lifespan on every invocation (Kludex/mangum#342);
    # the model is loaded once, at import, instead.
    return HttpAdapter(
        create_app(settings, model),
        lifespan="off",
        api_gateway_base_path=settings.api_base_path,
    )

"""/docs and /redoc without a CDN: the pages' scripts and styles come from the function itself,
under relative URLs, so they work offline (a VPC without internet) and under any stage; and
the Swagger page really renders, in headless Chromium with every other host unreachable."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import http_event, make_handler, serving
from tests.conftest import load_event

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model)


def _get(handler: Any, event: dict[str, Any]) -> tuple[int, str, bytes]:
    from handler.local.context import LocalContext

    response = handler(event, LocalContext())
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    return response["statusCode"], headers.get("content-type", ""), raw


def _assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"url: '([^']+)'", page)


@pytest.mark.parametrize(
    ("path", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_the_pages_load_nothing_from_another_host(handler: Any, path: str, script: str) -> None:
    code, kind, body = _get(handler, http_event(path=path, method="GET"))
    assert code == 200 and kind.startswith("text/html")
    page = body.decode()
    urls = _assets(page)
    assert any(u.endswith(script) for u in urls), urls
    assert not [u for u in urls if "//" in u or u.startswith("/")], "absolute or remote URLs"
    for url in urls:
        if url.startswith("docs-assets/"):
            got, mime, data = _get(handler, http_event(path=f"/{url}", method="GET"))
            assert got == 200 and len(data) > 1000 and mime, url


def test_under_a_rest_api_stage_every_url_keeps_the_stage(handler: Any) -> None:
    """A REST API's stage (/prod) is in the browser's URL, not in the path the app sees:
    relative URLs resolve to /prod/openapi.json and /prod/docs-assets/..."""
    event = load_event("apigw-rest-classify.json")
    event.update(path="/docs", httpMethod="GET", body=None, isBase64Encoded=False)
    event["requestContext"].update(path="/prod/docs", httpMethod="GET", resourcePath="/{proxy+}")
    code, _, body = _get(handler, event)
    assert code == 200
    base = "https://api.example.com/prod/docs"
    resolved = {urllib.parse.urljoin(base, u) for u in _assets(body.decode())}
    assert all(u.startswith("https://api.example.com/prod/") for u in resolved), resolved
    assert "https://api.example.com/prod/openapi.json" in resolved


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_swagger_ui_renders_in_a_browser_with_no_other_host(tiny_model: Path) -> None:
    with serving(tiny_model, through_lambda=True) as url, tempfile.TemporaryDirectory() as d:
        dom = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={d}",
                # Every host but this one is unreachable: a CDN script could not load.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"{url}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    # Rendered by Swagger UI from /openapi.json: the operations, not the empty <div> it starts as.
    assert 'class="swagger-ui' in dom, dom[:2000]
    assert "opblock" in dom and "/classify" in dom, dom[:2000]

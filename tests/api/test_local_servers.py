"""`serve` (uvicorn, the FastAPI app) and `serve --through-lambda` (uvicorn, each request an HTTP
API event through lambda_handler) speak HTTP/1.1 as a real server does: HEAD carries no body on
a keep-alive connection, bad Content-Length values get a 400 without hanging, chunked bodies are
read, and a body over MAX_BODY_BYTES is refused on its Content-Length or while it streams."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LIMIT = 4096


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["uvicorn", "through-lambda"])
def server(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[tuple[str, int]]:
    port = _free_port()
    extra = ["--through-lambda"] if request.param == "through-lambda" else []
    env = {**os.environ, "MODEL_DIR": str(tiny_model), "MAX_BODY_BYTES": str(LIMIT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "handler", "serve", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"serve {extra} did not start")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert "Traceback" not in err, err[-3000:]


def _raw(server: tuple[str, int], request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes; read until the server closes the connection (or stops sending)."""
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and the Content-Length body) from a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_head_has_no_body_and_the_next_response_on_the_connection_is_intact(
    server: tuple[str, int],
) -> None:
    conn = http.client.HTTPConnection(*server, timeout=10)
    conn.request("HEAD", "/health")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    conn.request("GET", "/health")  # the same keep-alive connection
    got = conn.getresponse()
    assert got.status == 200 and json.loads(got.read())["status"] == "ok"
    conn.close()


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1, 2"])
def test_a_bad_content_length_is_a_400_not_a_hang(server: tuple[str, int], length: bytes) -> None:
    started = time.monotonic()
    response = _raw(
        server,
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + length + b"\r\n\r\n" + b'{"inputs": "good"}',
    )
    assert _status(response) == 400 and time.monotonic() - started < 9


def test_a_chunked_body_is_read(server: tuple[str, int]) -> None:
    body = b'{"inputs": "the movie was great"}'
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    response = _raw(
        server,
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert _status(response) == 200
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])[0]["label"] == "POSITIVE"


def test_a_huge_declared_body_is_refused_before_it_is_sent(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n"  # 200 MiB announced, none of it sent
        )
        response = _response(sock)
    assert _status(response) == 413 and b"209715200 bytes" in response


def test_a_streamed_body_is_refused_once_it_passes_the_limit(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        response = b""
        for _ in range(64):  # up to 64 KiB, 16 times the limit: the 413 comes well before
            try:
                sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
            except OSError:
                break
            sock.settimeout(0.05)
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
            finally:
                sock.settimeout(10)
            if first:
                response = _response(sock)
                break
    assert _status(response) == 413 and b"MAX_BODY_BYTES" in response


def test_a_body_framed_twice_is_a_400_and_the_connection_closes(server: tuple[str, int]) -> None:
    body = b'{"inputs": "the movie was great"}'
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    response = _raw(
        server,
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
        % len(body)
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        + smuggled,  # a second request on the same connection: never answered
    )
    assert _status(response) == 400 and b"Content-Length and Transfer-Encoding" in response
    assert response.count(b"HTTP/1.1 ") == 1  # closed after the 400

"""Reaching the Hugging Face Hub: once, quickly, or not at all.

huggingface_hub retries an unreachable hub for ~25 s per file (5 retries, backing off), printing
a warning for each. The build asks once: HF_HUB_OFFLINE set means offline; otherwise one TCP
connection to the hub's endpoint (HF_ENDPOINT), with a short timeout, decides. Offline, downloads
run with `local_files_only=True`: what is in the local cache is still used, the rest fails at
once with one message.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the endpoint opens, else why not."""
    url = urlparse(endpoint)
    host = url.hostname or endpoint
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{url.netloc or host} is unreachable ({type(exc).__name__}: {exc})"


@functools.cache
def offline_reason() -> str | None:
    """Why the hub cannot be used (HF_HUB_OFFLINE, or the probe failed); None when it can.
    Asked once per process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None  # only huggingface_hub (through the proxy) can tell
    return probe(constants.ENDPOINT)

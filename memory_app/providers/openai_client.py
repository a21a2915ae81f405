"""The OpenAI-compatible client the chat (``memory_app.providers.llm``) and image (``workflows.providers.image``)
providers share: one per endpoint and process.

Building a client costs a TLS context (the CA bundle read and parsed, ~20 ms of CPU) and, in a new process, the
imports of the HTTP transport; its connection pool is what keeps the connection open between calls. So a client
is built once per endpoint and process, and every client of the process uses one TLS context. The client is
thread-safe; the process id in the cache key keeps a forked worker off its parent's sockets.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache
from typing import Any

import httpx


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # The transport's own default (the certifi bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set). A context holds
    # no connection: built in a worker's main process, its pool processes share it.
    import httpx2

    return httpx2.create_ssl_context()


@lru_cache(maxsize=16)
def _client(base_url: str | None, api_key: str, timeout_seconds: float, process_id: int) -> Any:
    import openai

    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=_tls_context()),
    )


def openai_client(*, base_url: str | None, api_key: str, timeout_seconds: float) -> Any:
    """The process's client for this endpoint, key and timeout (``openai.OpenAI``, no hidden retries)."""
    return _client(base_url, api_key, timeout_seconds, os.getpid())


def openai_client_warm_up() -> None:
    """Import the client's modules and build the TLS context now (in a worker's main process, before its pool
    forks), not in each process's first call."""
    import openai

    # A first HTTP client imports the transport modules it loads on first use; it opens no connection.
    openai.DefaultHttpxClient(verify=_tls_context()).close()

"""The OpenAI-compatible client the chat (``memory_app.providers.llm``) and image (``workflows.providers.image``)
providers share: one per endpoint and process.

Building a client costs a TLS context (the CA bundle read and parsed, ~20 ms of CPU) and, in a new process, the
imports of the HTTP transport; its connection pool is what keeps the connection open between calls. So a client
is built once per endpoint and process, and every client of the process uses one TLS context. The client is
thread-safe; the process id in the cache key keeps a forked worker off its parent's sockets.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any

import httpx

from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.redaction import redact_text
from memory_app.text import text_storable

logger = logging.getLogger("memory_app.providers")

# The most characters of an upstream answer kept in an error (its message, details, a run's error, the log).
EXCERPT_CHARS = 300


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # The transport's own default (the certifi bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set). A context holds
    # no connection: built in a worker's main process, its pool processes share it.
    import httpx2

    return httpx2.create_ssl_context()


@lru_cache(maxsize=16)
def _client(base_url: str | None, api_key: str, timeout_seconds: float, process_id: int) -> Any:
    import httpx2
    import openai

    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        # The client's own transport's Timeout (it would convert an ``httpx.Timeout`` to this, value for value).
        timeout=httpx2.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
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


def openai_json_answer(
    *, send: Callable[[], AbstractContextManager[Any]], label: str, details: dict[str, Any], max_bytes: int
) -> dict[str, Any]:
    """Send one request and return its answer, which must be one JSON object of at most ``max_bytes``.

    ``send`` opens the call in the client's streaming-response form (``client.x.with_streaming_response.y(...)``),
    so the body is read here, chunk by chunk, and refused as soon as it passes the limit: the client would
    otherwise read all of it into memory, then parse it, and hand back a bare string for an HTML page (its
    models are built without validation, so a truncated or foreign answer became an ``AttributeError`` later).

    Errors name the provider (``label``: "LLM", "image"). ``RetryableProviderError``: timeouts, connection errors,
    429, 5xx, an answer cut short or not JSON (a transfer fault or a proxy's page: trying again can help).
    ``ProviderError``: other HTTP statuses, an answer over the limit, JSON that is not an object.
    """
    with provider_errors(label, details), send() as response:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large(label, details, max_bytes)
        body = bytearray()
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise too_large(label, details, max_bytes)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        excerpt = answer_excerpt(bytes(body[: EXCERPT_CHARS * 4]).decode("utf-8", "replace"))
        message = (
            f"The {label} provider's answer is not JSON ({content_type or 'no content type'}, {len(body)} bytes): "
            f"cut short, or a page from something in between: {excerpt!r}"
        )
        logger.warning("%s", message)
        raise RetryableProviderError(
            message,
            details={**details, "content_type": content_type, "answer_bytes": len(body), "answer": excerpt},
        ) from None
    if not isinstance(document, dict):
        raise ProviderError(f"The {label} provider's answer is not a JSON object.", details=details)
    return document


def too_large(label: str, details: dict[str, Any], max_bytes: int) -> ProviderError:
    return ProviderError(
        f"The {label} provider's answer is over the limit of {max_bytes} bytes.",
        details={**details, "limit_bytes": max_bytes},
    )


@contextmanager
def provider_errors(label: str, details: dict[str, Any]) -> Iterator[None]:
    """The client's and its transport's errors met inside, as ``ProviderError`` / ``RetryableProviderError``
    (see ``openai_json_answer``); errors of ours pass through."""
    import httpx2
    import openai

    try:
        yield
    except openai.APITimeoutError:
        raise RetryableProviderError(f"The {label} provider timed out.", details=details) from None
    except openai.APIConnectionError as exc:
        raise RetryableProviderError(
            f"Could not reach the {label} provider: {exc.__cause__ or exc}", details=details
        ) from None
    except openai.APIStatusError as exc:
        # The upstream's own reason ("Invalid model name", "Incorrect API key"), cut and with any secret it echoes
        # removed: an unknown model and a bad key must not look the same.
        upstream = upstream_reason(exc)
        message = f"The {label} provider answered HTTP {exc.status_code}" + (f": {upstream}" if upstream else ".")
        error_details = {**details, "status": exc.status_code, "upstream_message": upstream}
        logger.warning("%s", message)
        if exc.status_code == 429 or exc.status_code >= 500:
            raise RetryableProviderError(message, details=error_details) from None
        raise ProviderError(message, details=error_details) from None
    except openai.OpenAIError as exc:
        raise ProviderError(f"The {label} provider failed: {exc}", details=details) from None
    except (httpx2.TimeoutException, httpx.TimeoutException):
        # Met while the body was read (by the client's transport, httpx2): the client wraps only the errors of
        # sending the request.
        raise RetryableProviderError(f"The {label} provider timed out.", details=details) from None
    except (httpx2.HTTPError, httpx.HTTPError) as exc:
        raise RetryableProviderError(f"The {label} provider's answer was cut short: {exc}", details=details) from None


def answer_excerpt(text: str) -> str:
    """The start of an upstream answer as it may be kept: storable, secrets removed, cut to EXCERPT_CHARS."""
    return redact_text(text_storable(" ".join(text.split())), max_chars=EXCERPT_CHARS)


def upstream_reason(exc: Any) -> str:
    """The reason an ``openai.APIStatusError`` carries: ``error.message`` of an OpenAI-style JSON body (LiteLLM,
    vLLM, Ollama, DeepSeek all answer so), else the body's text; cut and redacted (``answer_excerpt``)."""
    body = getattr(exc, "body", None)
    reason: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        reason = error.get("message") if isinstance(error, dict) else error
        if reason is None:
            reason = body.get("message") or body.get("detail")
    if reason is None:
        # Not JSON: the client's own message, "Error code: 400 - <the body's text>".
        reason = getattr(exc, "message", None)
    if reason is None:
        return ""
    if not isinstance(reason, str):
        reason = json.dumps(reason, ensure_ascii=False, default=str)
    return answer_excerpt(reason)

"""The engine's retry policy: which errors are transient (a provider's timeout, 429 or 5xx; a lost database,
Redis or broker connection; an object store out of reach or answering 5xx), the backoff between attempts, and
dropping a broken database connection so the next attempt opens a new one."""

from __future__ import annotations

import contextlib
import random

import httpx
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection


class RetryableStepError(Exception):
    """A transient failure (timeout, 5xx, 429, connection error): the unit is retried with backoff.

    Providers raise it (or let httpx's timeout / transport errors through); anything else fails the run.
    """


# A lost or refused database connection (a restart, a failover, a pooler recycling it, the server out of reach)
# or a busy one (a lock or statement timeout, SQLite's "database is locked"): transient, the unit runs again on a
# fresh connection.
DATABASE_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def _optional_redis_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):  # pragma: no cover - redis and kombu are in requirements
        import redis

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    with contextlib.suppress(ImportError):  # pragma: no cover
        import kombu.exceptions

        errors.append(kombu.exceptions.OperationalError)
    return tuple(errors)


def database_connection_reset() -> None:
    """Drop this thread's database connection after a connection error, so the next query opens a new one.

    Django keeps a connection that broke outside a transaction until the end of the task; every later query on
    it fails the same way. Not inside a transaction (an eager run in its caller's one): that one is its owner's.
    """
    if connection.in_atomic_block:
        return
    with contextlib.suppress(DatabaseError):  # closing a broken connection may fail too; it is dropped anyway
        connection.close()


def _optional_openai_errors() -> tuple[type[BaseException], ...]:
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is in requirements
        return ()
    return (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


def _optional_object_store_errors() -> tuple[type[BaseException], ...]:
    """An S3-compatible store out of reach (refused, reset, timed out): botocore's own connection errors, which are
    not the built-in ConnectionError."""
    try:
        import botocore.exceptions
    except ImportError:  # pragma: no cover - boto3 is in requirements
        return ()
    return (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


def _object_store_unavailable(exc: BaseException) -> bool:
    """A 5xx answer (500, 503 SlowDown) from the object store: transient, like a provider's."""
    try:
        import botocore.exceptions
    except ImportError:  # pragma: no cover - boto3 is in requirements
        return False
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and status >= 500


def is_retryable(exc: BaseException) -> bool:
    """Timeouts, connection errors (to a provider, the database, Redis, the broker or the object store), 429 and 5xx are
    transient; anything else is the step's own failure.

    An error that says so itself (``retryable = True``: ``memory_app.errors.RetryableProviderError``) is too.
    """
    if getattr(exc, "retryable", False) is True:
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    if _object_store_unavailable(exc):
        return True
    transient = (RetryableStepError, TimeoutError, ConnectionError, httpx.TimeoutException, httpx.TransportError)
    return isinstance(
        exc,
        transient
        + DATABASE_CONNECTION_ERRORS
        + _optional_redis_errors()
        + _optional_openai_errors()
        + _optional_object_store_errors(),
    )


def max_countdown() -> float:
    """Longest ETA we ever set: below the broker's visibility timeout, or Redis would deliver it twice."""
    visibility = (getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}).get("visibility_timeout")
    limit = float(settings.MEMORY.workflow.retry_backoff_max)
    return min(limit, float(visibility) * 0.5) if visibility else limit


def retry_delay(attempt: int) -> float:
    """Exponential backoff with jitter: base**attempt seconds, capped, then a random share in [50 %, 100 %]."""
    config = settings.MEMORY.workflow
    ceiling = min(config.retry_backoff_base ** max(attempt, 1), max_countdown())
    return round(random.uniform(ceiling / 2, ceiling), 3)

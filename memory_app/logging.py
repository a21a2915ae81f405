"""Logging context: every line written while a request is served carries its request id, and while a workflow
unit runs its workflow id and step; production writes them as JSON (``RedactingJsonFormatter``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.utils.functional import empty
from pythonjsonlogger.json import JsonFormatter

from memory_app.redaction import redact

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")
current_request: ContextVar[Any] = ContextVar("current_request", default=None)
current_workflow: ContextVar[tuple[str, str] | None] = ContextVar("current_workflow", default=None)


@contextlib.contextmanager
def workflow_log_context(*, workflow_id: str, step: str) -> Iterator[None]:
    """Lines logged inside carry ``workflow_id`` and ``step`` (the engine wraps each unit in it)."""
    token = current_workflow.set((workflow_id, step))
    try:
        yield
    finally:
        current_workflow.reset(token)


def _user_id(request: Any) -> int | None:
    # Only a user already resolved by authentication: a log line must never trigger a database query.
    user = request.__dict__.get("user") if request is not None else None
    user = getattr(user, "_wrapped", user)
    if user is None or user is empty or not getattr(user, "is_authenticated", False):
        return None
    pk: int | None = user.pk
    return pk


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        if not hasattr(record, "user"):
            record.user = _user_id(current_request.get())
        workflow = current_workflow.get()
        if not hasattr(record, "workflow_id"):
            record.workflow_id = workflow[0] if workflow else None
        if not hasattr(record, "step"):
            record.step = workflow[1] if workflow else None
        return True


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line; every field, extras included, redacted like history (memory_app.redaction)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "timestamp", "levelname": "level", "name": "logger"})
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        from django.conf import settings

        config = settings.MEMORY.history
        redacted: dict[str, Any] = redact(
            log_data, extra_names=config.redact_extra_fields, max_chars=config.max_detail_value_chars
        )
        return redacted

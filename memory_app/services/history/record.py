"""Appending a record: the one service every layer records through (seed §3)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from memory_app.errors import ValidationFailed
from memory_app.logging import current_request_id
from memory_app.models import DEFAULT_SUMMARIES, HistoryAction, HistoryRecord, Project
from memory_app.redaction import redact
from memory_app.services.search import search_index_history


def history_record(
    *,
    project: Project | None,
    action: str,
    details: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    summary: str | None = None,
    workflow_id: uuid.UUID | str | None = None,
) -> HistoryRecord:
    """Append one record: a single INSERT, whatever the size of the history.

    ``project`` is None only for system-wide events (a cache namespace cleared by staff).

    Details are redacted (sensitive keys at any depth, oversized values cut with a marker) before they are
    stored. Called inside a transaction, the record commits or rolls back with it.
    """
    record = history_record_build(
        project=project, action=action, details=details, user=user, summary=summary, workflow_id=workflow_id
    )
    record.save(force_insert=True)
    search_index_history(record=record, owner_id=project.owner_id if project is not None else None)
    return record


def history_record_build(
    *,
    project: Project | None,
    action: str,
    details: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    summary: str | None = None,
    workflow_id: uuid.UUID | str | None = None,
) -> HistoryRecord:
    """The record ``history_record`` appends, validated and redacted but not saved: for a caller that writes it
    in a statement of its own (the engine's step, ``workflow_step_advance``), then indexes it."""
    try:
        action = HistoryAction(action).value
    except ValueError:
        raise ValidationFailed(
            f"Unknown history action '{action}'.", details={"fields": {"action": ["Not in the action vocabulary."]}}
        ) from None
    config = settings.MEMORY.history
    clean_details = redact(
        details or {}, extra_names=config.redact_extra_fields, max_chars=config.max_detail_value_chars
    )
    request_id = current_request_id.get()
    return HistoryRecord(
        project=project,
        timestamp=timezone.now(),
        action=action,
        summary=(summary or DEFAULT_SUMMARIES.get(action, action.replace("_", " ").capitalize() + "."))[:500],
        details=clean_details,
        user=user if isinstance(user, get_user_model()) and user.is_authenticated else None,
        request_id="" if request_id == "-" else request_id,
        workflow_id=workflow_id,
    )

"""Validation shared by every conversation service: roles, message content and the context's limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from memory_app.errors import ValidationFailed
from memory_app.models import MessageRole

ROLES = tuple(role.value for role in MessageRole)


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str


def _field_error(name: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid value for: {name}.", details={"fields": {name: [problem]}})


def message_validate(*, role: Any, content: Any, field_prefix: str = "", content_field: str = "content") -> None:
    """Refuse an unknown role, empty content or content over ``conversation.max_message_chars``."""
    if role not in ROLES:
        raise _field_error(f"{field_prefix}role", f"Must be one of {', '.join(ROLES)}.")
    if not isinstance(content, str) or not content.strip():
        raise _field_error(f"{field_prefix}{content_field}", "Must be non-empty text.")
    limit = settings.MEMORY.conversation.max_message_chars
    if len(content) > limit:
        raise _field_error(f"{field_prefix}{content_field}", f"At most {limit} characters (got {len(content)}).")


def limit_validate(*, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(name, "Must be an integer.")
    if value < 1:
        raise _field_error(name, "Must be at least 1.")
    return value

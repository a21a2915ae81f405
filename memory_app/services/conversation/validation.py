"""Validation shared by every conversation service: roles, message content and the context's limits.

A message's rules are stated once, here: the append service refuses a bad message with the field names and the
messages the API has always answered with (``role``, ``content``, or ``messages[1].content`` in a batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings

from memory_app.errors import ValidationFailed
from memory_app.models import MessageRole

ROLES = tuple(role.value for role in MessageRole)


class _Missing:
    """The value of a field the request did not send (``None`` is a field sent as null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

REQUIRED = "This field is required."
NOT_NULL = "This field may not be null."
NOT_TEXT = "Must be a string."
EMPTY = "Must be non-empty text."
NUL = "Null characters are not allowed."


@dataclass(frozen=True)
class NewMessage:
    """A message to append. A caller that passes on what it received unchecked may hold any value here (or
    ``MISSING``): the append service validates it."""

    role: str
    content: str


def _field_error(name: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid value for: {name}.", details={"fields": {name: [problem]}})


def _fields_error(problems: dict[str, list[str]]) -> ValidationFailed:
    return ValidationFailed(f"Invalid value for: {', '.join(problems)}.", details={"fields": problems})


def _text_problems(content: str) -> list[str]:
    """Empty (or white space only) text, NUL characters, lone surrogates; then the length, if nothing else."""
    if not content.strip():
        return [EMPTY]
    problems = []
    if "\x00" in content:
        problems.append(NUL)
    surrogate = next((char for char in content if 0xD800 <= ord(char) <= 0xDFFF), None)
    if surrogate is not None:
        problems.append(f"Surrogate characters are not allowed: U+{ord(surrogate):X}.")
    if problems:
        return problems
    limit = settings.MEMORY.conversation.max_message_chars
    if len(content) > limit:
        return [f"At most {limit} characters (got {len(content)})."]
    return []


def message_problems(*, role: object, content: object, prefix: str = "") -> dict[str, list[str]]:
    """What is wrong with one message to append, by field name (``prefix`` + ``role`` / ``content``); empty when
    nothing is."""
    problems: dict[str, list[str]] = {}
    if role is MISSING or role is None:
        problems[f"{prefix}role"] = [REQUIRED if role is MISSING else NOT_NULL]
    elif not isinstance(role, str) or role not in ROLES:
        problems[f"{prefix}role"] = [f'"{role}" is not a valid choice.']
    if content is MISSING or content is None:
        problems[f"{prefix}content"] = [REQUIRED if content is MISSING else NOT_NULL]
    elif not isinstance(content, str):
        problems[f"{prefix}content"] = [NOT_TEXT]
    else:
        text = _text_problems(content)
        if text:
            problems[f"{prefix}content"] = text
    return problems


def messages_validate(messages: NewMessage | Sequence[NewMessage]) -> list[NewMessage]:
    """The messages to append, as a list; ValidationFailed naming every bad field. A single message's fields are
    ``role`` and ``content``; a sequence's ``messages[0].role`` and so on."""
    if isinstance(messages, NewMessage):
        problems = message_problems(role=messages.role, content=messages.content)
        items = [messages]
    else:
        items = list(messages)
        if not items:
            raise _field_error("messages", "At least one message is required.")
        problems = {}
        for index, message in enumerate(items):
            problems.update(message_problems(role=message.role, content=message.content, prefix=f"messages[{index}]."))
    if problems:
        raise _fields_error(problems)
    return items


def message_validate(*, role: Any, content: Any, field_prefix: str = "", content_field: str = "content") -> None:
    """Refuse an unknown role, empty content or content over ``conversation.max_message_chars`` (the rules of an
    imported message and of a generation's prompt)."""
    if role not in ROLES:
        raise _field_error(f"{field_prefix}role", f"Must be one of {', '.join(ROLES)}.")
    if not isinstance(content, str) or not content.strip():
        raise _field_error(f"{field_prefix}{content_field}", EMPTY)
    limit = settings.MEMORY.conversation.max_message_chars
    if len(content) > limit:
        raise _field_error(f"{field_prefix}{content_field}", f"At most {limit} characters (got {len(content)}).")


def limit_validate(*, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(name, "Must be an integer.")
    if value < 1:
        raise _field_error(name, "Must be at least 1.")
    return value

"""Export and import of the §2.3 persistence document: every message of every context, archived ones and the
summary included; an import is validated whole, then replayed through the window rule atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from memory_app.errors import Conflict, ValidationFailed
from memory_app.models import SUMMARY_POSITION, ContextMessage, ConversationContext, HistoryAction, MessageRole, Project
from memory_app.providers.llm import fit_to_budget
from memory_app.redaction import redact
from memory_app.services.conversation.lifecycle import _check_limit, _lock_owner
from memory_app.services.conversation.totals import _save_totals, _summary_cap, _totals_of
from memory_app.services.conversation.validation import message_validate
from memory_app.services.conversation.window import _append_locked
from memory_app.services.history import history_record
from memory_app.services.search import search_index_message, search_message_times_sync
from memory_app.tokens import count_tokens

PERSISTENCE_VERSION = "1.0"


def _epoch(moment: datetime) -> float:
    return round(moment.timestamp(), 6)


def context_export_document(
    *, contexts: Iterable[ConversationContext], default_context_id: UUID | None = None
) -> dict[str, Any]:
    """The §2.3 persistence document: every message of every context, archived ones and the summary included."""
    entries: dict[str, Any] = {}
    for context in contexts:
        messages = [
            {
                "role": message.role,
                "content": message.content,
                "position": message.position,
                "token_count": message.token_count,
                "archived": message.archived,
                "summary": message.is_summary,
                "unanswered": message.unanswered,
                "created_at": _epoch(message.created_at),
            }
            for message in ContextMessage.objects.filter(context=context).order_by("position")
        ]
        entries[str(context.id)] = {
            "conversation_id": str(context.id),
            "messages": messages,
            "metadata": context.metadata,
            "context_type": context.context_type,
            "project_id": context.project.public_id if context.project is not None else None,
            "is_default": context.is_default,
            "created_at": _epoch(context.created_at),
            "last_updated": _epoch(context.last_updated),
            "max_messages": context.max_messages,
            "max_tokens": context.max_tokens,
        }
    return {
        "context_persistence": {
            "version": PERSISTENCE_VERSION,
            "contexts": entries,
            "default_context_id": str(default_context_id) if default_context_id else None,
            "last_saved": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    }


def _timestamp(value: Any) -> datetime | None:
    """Epoch seconds (the seed's §2.1 form) or an ISO 8601 string; anything out of range is refused."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError("must be epoch seconds or an ISO 8601 date-time")


class _ImportedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str
    summary: bool = False
    position: StrictInt | None = None
    created_at: Any = None

    @field_validator("created_at")
    @classmethod
    def _moment(cls, value: Any) -> datetime | None:
        return _timestamp(value)


class _ImportedContext(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversation_id: UUID
    messages: list[_ImportedMessage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    context_type: str = Field(default="general", min_length=1, max_length=64)
    project_id: str | None = None
    created_at: Any = None
    last_updated: Any = None
    max_messages: StrictInt | None = Field(default=None, ge=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)

    @field_validator("created_at", "last_updated")
    @classmethod
    def _moment(cls, value: Any) -> datetime | None:
        return _timestamp(value)


class _Persistence(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    contexts: dict[str, _ImportedContext]
    default_context_id: UUID | None = None
    last_saved: str | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value != PERSISTENCE_VERSION:
            raise ValueError(f"unsupported version {value!r}; this server reads {PERSISTENCE_VERSION!r}")
        return value


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore")
    context_persistence: _Persistence


def _moment(value: datetime | None) -> datetime:
    return timezone.now() if value is None else value


def _parse_document(document: Any) -> _Persistence:
    try:
        return _Document.model_validate(document).context_persistence
    except ValidationError as exc:
        fields = {
            ".".join(str(part) for part in error["loc"]): [error["msg"]] for error in exc.errors(include_url=False)
        }
        raise ValidationFailed("The persistence document is not valid.", details={"fields": fields}) from None


def context_import(*, owner: User, document: Any) -> list[ConversationContext]:
    """Import a §2.3 document for ``owner``: everything is validated first and the import is atomic.

    Contexts keep their ids (a taken id is a 409 naming it). Messages are replayed in position order through
    the window rule with token counts recomputed by our counter, so the imported window obeys the budgets;
    the exported summary comes back as the summary. The document's default becomes the user's default only if
    the user has none. Any problem → nothing imported.
    """
    persistence = _parse_document(document)
    problems: dict[str, list[str]] = {}
    for key, entry in persistence.contexts.items():
        if key != str(entry.conversation_id):
            problems[f"contexts.{key}.conversation_id"] = ["Must equal the key it is stored under."]
        for index, message in enumerate(entry.messages):
            prefix = f"contexts.{key}.messages.{index}."
            try:
                message_validate(role=message.role, content=message.content)
            except ValidationFailed as exc:
                for name, errors in exc.details["fields"].items():
                    problems[prefix + name] = errors
            if message.summary and message.role != MessageRole.SYSTEM:
                problems[prefix + "summary"] = ["Only a system message can be the summary."]
        if sum(1 for message in entry.messages if message.summary) > 1:
            problems[f"contexts.{key}.messages"] = ["At most one summary message."]
    if problems:
        raise ValidationFailed("The persistence document is not valid.", details={"fields": problems})
    ids = [entry.conversation_id for entry in persistence.contexts.values()]
    taken = sorted(str(pk) for pk in ConversationContext.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if taken:
        raise Conflict("Some context ids exist already.", details={"context_ids": taken})
    project_ids = {entry.project_id for entry in persistence.contexts.values() if entry.project_id}
    # Ids are the owner's public ids: another owner's project of the same id is not this one.
    projects = {
        project.public_id: project for project in Project.objects.filter(public_id__in=project_ids, owner=owner)
    }
    missing = sorted(project_ids - set(projects))
    if missing:
        raise ValidationFailed(
            "Some projects do not exist or are not yours.",
            details={"fields": {"project_id": [f"Unknown project: {pk}" for pk in missing]}},
        )
    config = settings.MEMORY.conversation
    created: list[ConversationContext] = []
    with transaction.atomic():
        _lock_owner(owner)
        _check_limit(owner, adding=len(persistence.contexts))
        has_default = ConversationContext.objects.filter(owner=owner, is_default=True).exists()
        for entry in persistence.contexts.values():
            make_default = not has_default and entry.conversation_id == persistence.default_context_id
            context = ConversationContext.objects.create(
                id=entry.conversation_id,
                owner=owner,
                project=projects.get(entry.project_id or ""),
                context_type=entry.context_type,
                max_messages=entry.max_messages or config.default_max_messages,
                max_tokens=entry.max_tokens or config.default_max_tokens,
                metadata=redact(entry.metadata),
                is_default=make_default,
                created_at=_moment(entry.created_at),
            )
            ordered = sorted(
                (message for message in entry.messages if not message.summary),
                key=lambda message: message.position if message.position is not None else 0,
            )
            totals = _totals_of(context)
            summary = next((message for message in entry.messages if message.summary), None)
            if summary is not None:
                text = fit_to_budget(summary.content, _summary_cap(context))
                tokens = count_tokens(text)
                summary_message = ContextMessage.objects.create(
                    context=context,
                    position=SUMMARY_POSITION,
                    role=MessageRole.SYSTEM,
                    content=text,
                    token_count=tokens,
                    is_summary=True,
                )
                search_index_message(context=context, message=summary_message)
                totals.system_count, totals.system_tokens, totals.summary_tokens = 1, tokens, tokens
            if ordered:
                # Replayed in order through the window rule (which saves the totals; saved again below once
                # summarized_through is set); what the file's summary already covers is not folded into it a
                # second time.
                _append_locked(
                    context,
                    totals,
                    [(m.role, m.content, count_tokens(m.content)) for m in ordered],
                    summarize=config.summarize_evicted,
                )
            if summary is not None:
                # The file's summary already covers what the file had evicted: do not fold it a second time.
                context.summarized_through = context.next_position - 1
            _save_totals(context, totals)
            # Keep the original times: the replay wrote "now".
            replayed = {m.position: m for m in ContextMessage.objects.filter(context=context, position__gte=0)}
            for position, message in enumerate(ordered):
                if message.created_at is not None and position in replayed:
                    replayed[position].created_at = message.created_at
            ContextMessage.objects.bulk_update(replayed.values(), ["created_at"])
            if summary is not None and summary.created_at is not None:
                ContextMessage.objects.filter(context=context, position=SUMMARY_POSITION).update(
                    created_at=summary.created_at
                )
            search_message_times_sync(context=context)  # the index rows were written with the replay's time
            ConversationContext.objects.filter(pk=context.pk).update(last_updated=_moment(entry.last_updated))
            context.refresh_from_db()
            if make_default:
                has_default = True
            if context.project_id is not None:
                history_record(
                    project=context.project,
                    action=HistoryAction.CONTEXT_IMPORTED,
                    user=owner,
                    details={"context_id": str(context.id), "messages": len(entry.messages)},
                )
            created.append(context)
    return created

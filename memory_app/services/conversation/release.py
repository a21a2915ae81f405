"""Release of contexts (seed §7.1) and their restore.

A context not written for ``conversation.inactive_after_seconds``, or beyond ``conversation.max_active_contexts``
live contexts system-wide (the least recently updated first), is released: its §2.3 persistence document is
written gzip-compressed to ``conversation.release_location`` in the default storage, read back and verified
(sha256 and message count), and only then is the context deleted, in one transaction with a compare-and-set on
``last_updated``: a context written during the export stays (and its file goes). A ``ReleasedContext`` row
remembers the file; the owner lists them and restores one with its id, messages and summary.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from memory_app.errors import Conflict
from memory_app.models import ContextMessage, ConversationContext, Project, ReleasedContext
from memory_app.services.conversation.transfer import context_export_document, context_import

logger = logging.getLogger("memory_app.conversation.release")

INACTIVE = "inactive"
OVER_LIMIT = "over_limit"


@dataclass
class ReleaseReport:
    inactive_contexts: int = 0
    over_limit_contexts: int = 0
    released: list[str] = field(default_factory=list)
    # Written to while being exported: kept, looked at again next run.
    kept_written_meanwhile: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _document_bytes(context: ConversationContext) -> tuple[bytes, str]:
    default = context.id if context.is_default else None
    document = context_export_document(contexts=[context], default_context_id=default)
    raw = json.dumps(document, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return raw, hashlib.sha256(raw).hexdigest()


def _read_document(file_name: str, checksum: str) -> dict[str, Any]:
    with default_storage.open(file_name, "rb") as handle:
        raw = gzip.decompress(handle.read())
    if hashlib.sha256(raw).hexdigest() != checksum:
        raise ValueError(f"{file_name} does not match its checksum")
    document: dict[str, Any] = json.loads(raw)
    return document


def context_release(*, context: ConversationContext, reason: str) -> bool:
    """Export, verify, then delete ``context`` unless it was written meanwhile. True when it was released."""
    seen = context.last_updated
    raw, checksum = _document_bytes(context)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
    location = settings.MEMORY.conversation.release_location
    file_name = default_storage.save(
        f"{location}/{context.owner_id}/{context.id}-{stamp}.json.gz", File(io.BytesIO(gzip.compress(raw)))
    )
    entry = _read_document(file_name, checksum)["context_persistence"]["contexts"][str(context.id)]
    messages = ContextMessage.objects.filter(context=context).count()
    if len(entry["messages"]) != messages:
        default_storage.delete(file_name)
        return False
    with transaction.atomic():
        # Compare-and-set: the row is locked only if nobody wrote to the context since it was read.
        locked = ConversationContext.objects.select_for_update().filter(pk=context.pk, last_updated=seen).first()
        if locked is None or ContextMessage.objects.filter(context=context).count() != messages:
            transaction.on_commit(lambda: default_storage.delete(file_name))
            return False
        previous = ReleasedContext.objects.filter(pk=context.pk).first()
        ReleasedContext.objects.update_or_create(
            id=context.pk,
            defaults={
                "owner_id": context.owner_id,
                "context_type": context.context_type,
                "project_public_id": context.project.public_id if context.project is not None else None,
                "was_default": context.is_default,
                "message_count": messages,
                "last_updated": seen,
                "released_at": timezone.now(),
                "reason": reason,
                "file_name": file_name,
                "checksum": checksum,
                "size_bytes": default_storage.size(file_name),
            },
        )
        locked.delete()
        if previous is not None and previous.file_name != file_name:
            stale = previous.file_name
            transaction.on_commit(lambda: default_storage.delete(stale))
    logger.info("context %s of user %s released (%s): %d messages", context.pk, context.owner_id, reason, messages)
    return True


def contexts_release(*, now: dt.datetime | None = None, limit: int = 1000) -> ReleaseReport:
    """Release the inactive contexts and those beyond ``conversation.max_active_contexts`` (at most ``limit``)."""
    config = settings.MEMORY.conversation
    since = (now or timezone.now()) - dt.timedelta(seconds=config.inactive_after_seconds)
    contexts = ConversationContext.objects.select_related("project").order_by("last_updated", "id")
    report = ReleaseReport()
    # An owner's default context is kept through inactivity (generate-with-context uses it); beyond the limit it
    # goes last.
    inactive = contexts.filter(last_updated__lt=since, is_default=False)
    candidates: list[tuple[ConversationContext, str]] = [(context, INACTIVE) for context in inactive[:limit]]
    report.inactive_contexts = inactive.count()
    live_after = contexts.count() - report.inactive_contexts
    beyond = live_after - config.max_active_contexts
    if beyond > 0:
        rest = contexts.exclude(pk__in=inactive.values("pk")).order_by("is_default", "last_updated", "id")
        extra = list(rest[: min(beyond, max(limit - len(candidates), 0))])
        report.over_limit_contexts = beyond
        candidates += [(context, OVER_LIMIT) for context in extra]
    for context, reason in candidates:
        try:
            released = context_release(context=context, reason=reason)
        except (OSError, ValueError, KeyError) as exc:
            logger.exception("context %s could not be released: %s", context.pk, exc)
            report.failed.append(str(context.pk))
            continue
        (report.released if released else report.kept_written_meanwhile).append(str(context.pk))
    return report


def released_context_restore(*, released: ReleasedContext) -> ConversationContext:
    """Bring a released context back for its owner: same id, messages, summary (and default, if the owner has
    none now). Its activity time is now, so the next release run does not take it again at once."""
    try:
        document = _read_document(released.file_name, released.checksum)
    except (OSError, ValueError) as exc:
        raise Conflict(
            "The released context's file cannot be read; it cannot be restored.",
            details={"context_id": str(released.pk), "problem": str(exc)},
        ) from None
    owner = User.objects.get(pk=released.owner_id)
    for entry in document["context_persistence"]["contexts"].values():
        # A project deleted since the release: the context comes back without one rather than not at all.
        if entry.get("project_id") and not Project.objects.filter(owner=owner, public_id=entry["project_id"]).exists():
            entry["project_id"] = None
    with transaction.atomic():
        [context] = context_import(owner=owner, document=document)
        ConversationContext.objects.filter(pk=context.pk).update(last_updated=timezone.now())
        file_name = released.file_name
        ReleasedContext.objects.filter(pk=released.pk).delete()
        transaction.on_commit(lambda: default_storage.delete(file_name))
    context.refresh_from_db()
    logger.info("released context %s restored for user %s", context.pk, owner.pk)
    return context

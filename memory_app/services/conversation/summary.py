"""The rolling summary: evicted messages folded into one system message by the LLM provider, after the append
has committed, with a compare-and-set on ``summarized_through``.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from memory_app.errors import ProviderError
from memory_app.models import SUMMARY_POSITION, ContextMessage, ConversationContext, MessageRole
from memory_app.providers.llm import ChatMessage, OfflineLLM, fit_to_budget, llm_provider
from memory_app.services.conversation.totals import _summary_cap
from memory_app.services.search import search_index_message
from memory_app.tokens import count_tokens

logger = logging.getLogger(__name__)


def context_refresh_summary(*, context: ConversationContext, attempts: int = 3) -> bool:
    """Fold the messages evicted since the last fold into the rolling summary. Returns whether it wrote one.

    Runs after the append has committed: the provider call (HTTP for an online provider) never holds the
    context's row lock. Compare-and-set on ``summarized_through`` makes concurrent folds safe: if another process
    folded first, read again and retry; whatever is left stays pending (archived, position above
    ``summarized_through``) and is folded by the next eviction, so nothing evicted is ever skipped.
    """
    if not settings.MEMORY.conversation.summarize_evicted:
        return False
    for _ in range(attempts):
        current = ConversationContext.objects.filter(pk=context.pk).values_list("summarized_through", flat=True)
        through = current.first()
        if through is None:
            return False  # deleted meanwhile
        pending = list(
            ContextMessage.objects.filter(context=context, archived=True, position__gt=through)
            .exclude(role=MessageRole.SYSTEM)
            .order_by("position")
            .values_list("position", "role", "content")
        )
        if not pending:
            return False
        summary = ContextMessage.objects.filter(context=context, position=SUMMARY_POSITION).first()
        text = _summary_text(context, summary.content if summary else None, pending)
        tokens = count_tokens(text)
        last = pending[-1][0]
        with transaction.atomic():
            # Compare-and-set: another process that folded meanwhile moved summarized_through; start again.
            locked = ConversationContext.objects.select_for_update().filter(pk=context.pk).first()
            if locked is None:
                return False
            if locked.summarized_through != through:
                continue
            existing = ContextMessage.objects.filter(context=locked, position=SUMMARY_POSITION).first()
            if existing is None:
                written = ContextMessage.objects.create(
                    context=locked,
                    position=SUMMARY_POSITION,
                    role=MessageRole.SYSTEM,
                    content=text,
                    token_count=tokens,
                    is_summary=True,
                )
                locked.system_count += 1
                locked.system_tokens += tokens
            else:
                locked.system_tokens += tokens - existing.token_count
                existing.content, existing.token_count, existing.created_at = text, tokens, timezone.now()
                ContextMessage.objects.filter(pk=existing.pk).update(
                    content=text, token_count=tokens, created_at=existing.created_at
                )
                written = existing
            # The summary is indexed too: it is what remains of the messages folded into it once they are gone.
            search_index_message(context=locked, message=written)
            if not settings.MEMORY.conversation.keep_archived:
                ContextMessage.objects.filter(
                    context=locked, archived=True, position__gt=through, position__lte=last
                ).exclude(role=MessageRole.SYSTEM).delete()
            locked.summarized_through = last
            locked.save(update_fields=["system_count", "system_tokens", "summarized_through"])
        return True
    return False


def _summary_text(context: ConversationContext, previous: str | None, pending: list[tuple[int, str, str]]) -> str:
    cap = _summary_cap(context)
    chat = [ChatMessage(role=role, content=content) for _, role, content in pending]
    try:
        text = llm_provider().summarize(previous_summary=previous, messages=chat, max_tokens=cap)
    except ProviderError as exc:
        # The window must not fail because the summarizer did: fall back to the offline extractive summary.
        logger.warning("summary provider failed (%s); using the offline summary", exc.message)
        text = OfflineLLM().summarize(previous_summary=previous, messages=chat, max_tokens=cap)
    # The summary's room is reserved in the budget: it must never outgrow it.
    return fit_to_budget(text, cap) or fit_to_budget(previous or "", cap) or fit_to_budget(chat[-1].content, cap)

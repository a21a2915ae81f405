"""Generate with context: append the user's prompt, send the window to the LLM provider, append the reply;
idempotent per request id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from memory_app.errors import Conflict
from memory_app.models import ContextMessage, ConversationContext, MessageRole
from memory_app.providers.llm import ChatMessage, ChatResult, fit_to_budget, llm_provider
from memory_app.services.conversation.summary import context_refresh_summary
from memory_app.services.conversation.totals import _lock, _other_budgets, _totals_of
from memory_app.services.conversation.validation import NewMessage, message_validate
from memory_app.services.conversation.window import _append_locked, context_append
from memory_app.tokens import count_tokens

REPLY_SUFFIX = ":reply"


@dataclass(frozen=True)
class Generation:
    context: ConversationContext
    prompt_message: ContextMessage
    reply: ContextMessage
    usage: dict[str, int]
    provider: str
    model: str
    replayed: bool = False


def context_generate(
    *,
    context: ConversationContext,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    request_id: str | None = None,
) -> Generation:
    """Append the user's prompt, send the window to the LLM provider, append and return the reply.

    ``system`` is an instruction for this call only: it is sent first and not stored (store a persona with a
    system message instead). With a ``request_id`` the call is idempotent: a retry finds the prompt already
    stored (after a provider failure it is marked ``unanswered``) and does not append it again; a retry after
    success returns the stored reply without calling the provider. The same request id with another prompt is a
    409. A provider failure raises ``ProviderError`` (502) and leaves the prompt stored and unanswered.
    """
    prompt_message, replay, chat = generation_prepare(
        context=context, prompt=prompt, system=system, request_id=request_id
    )
    if replay is not None:
        return replay
    result = llm_provider().chat(messages=chat, temperature=temperature, max_tokens=max_tokens)
    return generation_store(context=context, prompt_message=prompt_message, result=result, request_id=request_id)


def generation_prepare(
    *, context: ConversationContext, prompt: str, system: str | None, request_id: str | None
) -> tuple[ContextMessage, Generation | None, list[ChatMessage]]:
    """Validate, store the prompt (once per request id), and return it with the stored answer of an earlier call
    with this request id (a replay, then nothing is to be sent) or the window to send."""
    message_validate(role=MessageRole.USER, content=prompt, content_field="prompt")
    if system is not None:
        message_validate(role=MessageRole.SYSTEM, content=system, content_field="system")
    prompt_message = _prompt_message(context=context, prompt=prompt, request_id=request_id)
    context_refresh_summary(context=context)  # so that the window sent holds what the prompt just evicted
    if request_id is not None:
        stored_reply = ContextMessage.objects.filter(context=context, request_id=request_id + REPLY_SUFFIX).first()
        if stored_reply is not None:
            return prompt_message, _replayed(context, prompt_message, stored_reply), []
    window = list(
        ContextMessage.objects.filter(context=context, archived=False)
        .order_by("position")
        .values_list("role", "content")
    )
    chat = [ChatMessage(role=role, content=content) for role, content in window]
    if system:
        chat.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=system))
    return prompt_message, None, chat


def generation_store(
    *, context: ConversationContext, prompt_message: ContextMessage, result: ChatResult, request_id: str | None
) -> Generation:
    """Append the provider's reply (once per request id: a concurrent call's stored reply wins) and return it."""
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
    }
    metadata = {"provider": result.provider, "model": result.model, "usage": usage}
    summarize = settings.MEMORY.conversation.summarize_evicted
    try:
        locked, reply = _store_reply(context, prompt_message, result.content, request_id, metadata, summarize)
    except IntegrityError:
        # A concurrent retry with the same request id stored its reply first: that one is the answer.
        stored_reply = ContextMessage.objects.filter(context=context, request_id=f"{request_id}{REPLY_SUFFIX}").first()
        if request_id is None or stored_reply is None:
            raise
        return _replayed(context, prompt_message, stored_reply)
    if context_refresh_summary(context=locked):
        locked.refresh_from_db()
    prompt_message.unanswered = False
    return Generation(
        context=locked,
        prompt_message=prompt_message,
        reply=reply,
        usage=usage,
        provider=result.provider,
        model=result.model,
    )


def _replayed(context: ConversationContext, prompt_message: ContextMessage, stored_reply: ContextMessage) -> Generation:
    context.refresh_from_db()
    prompt_message.refresh_from_db()
    return Generation(
        context=context,
        prompt_message=prompt_message,
        reply=stored_reply,
        usage=stored_reply.metadata.get("usage", {}),
        provider=stored_reply.metadata.get("provider", ""),
        model=stored_reply.metadata.get("model", ""),
        replayed=True,
    )


def _store_reply(
    context: ConversationContext,
    prompt_message: ContextMessage,
    text: str,
    request_id: str | None,
    metadata: dict[str, Any],
    summarize: bool,
) -> tuple[ConversationContext, ContextMessage]:
    with transaction.atomic():
        locked = _lock(context)
        totals = _totals_of(locked)
        _, room = _other_budgets(locked, totals, summarize=summarize)
        # A reply longer than the whole window budget is cut to fit rather than lost.
        content = fit_to_budget(text.strip() or "…", max(room, 1))
        reply_request_id = request_id + REPLY_SUFFIX if request_id is not None else None
        (reply,) = _append_locked(
            locked,
            totals,
            [(MessageRole.ASSISTANT, content, count_tokens(content))],
            summarize=summarize,
            request_id=reply_request_id,
            metadata=metadata,
        )
        ContextMessage.objects.filter(pk=prompt_message.pk).update(unanswered=False)
    return locked, reply


def _prompt_message(*, context: ConversationContext, prompt: str, request_id: str | None) -> ContextMessage:
    if request_id is not None:
        existing = ContextMessage.objects.filter(context=context, request_id=request_id).first()
        if existing is not None:
            if existing.content != prompt:
                raise Conflict(
                    "This request id was already used with another prompt.",
                    details={"request_id": request_id, "context_id": str(context.id)},
                )
            return existing
    try:
        _, (row,) = context_append(
            context=context,
            messages=NewMessage(role=MessageRole.USER.value, content=prompt),
            request_id=request_id,
            unanswered=True,
        )
    except IntegrityError:
        # A concurrent retry with the same request id stored the prompt first: use that one.
        existing = ContextMessage.objects.filter(context=context, request_id=request_id).first()
        if existing is None:
            raise
        return existing
    return row

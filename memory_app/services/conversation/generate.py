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
from memory_app.services.conversation.recall import Recalled, context_recall_top_k, recall_into_window
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
    # What recall added to the window (``Recalled.as_metadata()``), None when recall was off.
    recall: dict[str, Any] | None = None


@dataclass(frozen=True)
class Prepared:
    prompt_message: ContextMessage
    replay: Generation | None  # the stored answer of an earlier call with this request id: nothing is to be sent
    chat: list[ChatMessage]  # the window to send
    recalled: Recalled | None = None


def context_generate(
    *,
    context: ConversationContext,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    request_id: str | None = None,
    recall: object = None,
) -> Generation:
    """Append the user's prompt, send the window to the LLM provider, append and return the reply.

    ``system`` is an instruction for this call only: it is sent first and not stored (store a persona with a
    system message instead). With a ``request_id`` the call is idempotent: a retry finds the prompt already
    stored (after a provider failure it is marked ``unanswered``) and does not append it again; a retry after
    success returns the stored reply without calling the provider. The same request id with another prompt is a
    409. A provider failure raises ``ProviderError`` (502) and leaves the prompt stored and unanswered.

    ``recall`` (``true``, ``{"top_k": n}``, ``false``; None: the context's ``metadata.recall``) adds the archived
    messages of this context that best match the prompt to the window sent, within its token budget
    (``memory_app.services.conversation.recall``); the reply's metadata says which.
    """
    prepared = generation_prepare(context=context, prompt=prompt, system=system, request_id=request_id, recall=recall)
    if prepared.replay is not None:
        return prepared.replay
    result = llm_provider().chat(messages=prepared.chat, temperature=temperature, max_tokens=max_tokens)
    return generation_store(
        context=context,
        prompt_message=prepared.prompt_message,
        result=result,
        request_id=request_id,
        recalled=prepared.recalled,
    )


def generation_prepare(
    *,
    context: ConversationContext,
    prompt: str,
    system: str | None,
    request_id: str | None,
    recall: object = None,
) -> Prepared:
    """Validate, store the prompt (once per request id), and return it with the stored answer of an earlier call
    with this request id (a replay, then nothing is to be sent) or the window to send, recalled messages added
    when recall is on."""
    message_validate(role=MessageRole.USER, content=prompt, content_field="prompt")
    if system is not None:
        message_validate(role=MessageRole.SYSTEM, content=system, content_field="system")
    recall_top_k = context_recall_top_k(context=context, requested=recall)
    prompt_message = _prompt_message(context=context, prompt=prompt, request_id=request_id)
    context_refresh_summary(context=context)  # so that the window sent holds what the prompt just evicted
    if request_id is not None:
        stored_reply = ContextMessage.objects.filter(context=context, request_id=request_id + REPLY_SUFFIX).first()
        if stored_reply is not None:
            return Prepared(prompt_message, _replayed(context, prompt_message, stored_reply), [])
    window = list(
        ContextMessage.objects.filter(context=context, archived=False)
        .order_by("position")
        .values_list("role", "content", "token_count")
    )
    chat = [ChatMessage(role=role, content=content) for role, content, _tokens in window]
    window_tokens = sum(tokens for _role, _content, tokens in window)
    if system:
        chat.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=system))
        window_tokens += count_tokens(system)
    if recall_top_k is None:
        return Prepared(prompt_message, None, chat)
    chat, recalled = recall_into_window(
        context=context, prompt=prompt, chat=chat, window_tokens=window_tokens, top_k=recall_top_k
    )
    return Prepared(prompt_message, None, chat, recalled)


def generation_store(
    *,
    context: ConversationContext,
    prompt_message: ContextMessage,
    result: ChatResult,
    request_id: str | None,
    recalled: Recalled | None = None,
) -> Generation:
    """Append the provider's reply (once per request id: a concurrent call's stored reply wins) and return it."""
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
    }
    metadata: dict[str, Any] = {"provider": result.provider, "model": result.model, "usage": usage}
    if recalled is not None:
        metadata["recall"] = recalled.as_metadata()
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
        recall=metadata.get("recall"),
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
        recall=stored_reply.metadata.get("recall"),
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

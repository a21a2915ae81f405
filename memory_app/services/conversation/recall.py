"""Recall in generate-with-context: the archived messages of the context that best match the prompt, added to the
window sent to the provider (never stored as messages).

The option (``recall_option``) is ``true`` (``search.generate_top_k`` messages), ``{"top_k": n}`` (1 ≤ n ≤ 20),
``false`` or absent (off). It comes from the request, else from the context's ``metadata.recall`` (set when the
context is created); off by default. The recalled messages go into one system message, placed after the other
system messages and before the conversation's turns, that begins ``RECALL_PREFIX`` ("Earlier in this conversation
(recalled):") and lists them oldest first as ``- <role>: <content>``: the provider sees them as recalled, not as the
latest turns. They must fit the context's ``max_tokens`` beside the window (and this call's ``system``
instruction): the best hits are taken while that message fits; fewer, or none, when the room is short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from memory_app.errors import ValidationFailed
from memory_app.models import ContextMessage, ConversationContext, MessageRole, SearchKind
from memory_app.providers.llm import RECALL_PREFIX, ChatMessage
from memory_app.selectors.search import memory_search
from memory_app.tokens import count_tokens

MAX_RECALL_TOP_K = 20


@dataclass(frozen=True)
class Recalled:
    """What a generation recalled: the message ids, oldest first, and how the search ran."""

    top_k: int
    message_ids: list[int]
    positions: list[int]
    mode: str
    degraded: str | None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "message_ids": self.message_ids,
            "positions": self.positions,
            "mode": self.mode,
            "degraded": self.degraded,
        }


def recall_option(value: object, *, field: str = "recall") -> int | None:
    """The number of messages to recall that ``value`` asks for, None for off. A bad value is a
    ``ValidationFailed`` naming ``field`` (``recall``, ``recall.top_k``, ``metadata.recall``)."""
    if value is None or value is False:
        return None
    if value is True:
        return int(settings.MEMORY.search.generate_top_k)
    if isinstance(value, dict):
        unknown = sorted(str(key) for key in value if key != "top_k")
        if unknown:
            message = f"Unknown key(s) {', '.join(unknown)}: the only one is top_k."
            raise ValidationFailed(message, details={"fields": {field: [message]}})
        top_k = value.get("top_k", settings.MEMORY.search.generate_top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_RECALL_TOP_K:
            message = f"top_k is a whole number from 1 to {MAX_RECALL_TOP_K}."
            raise ValidationFailed(message, details={"fields": {f"{field}.top_k": [message]}})
        return top_k
    message = 'Send true, false or {"top_k": n}.'
    raise ValidationFailed(message, details={"fields": {field: [message]}})


def context_recall_top_k(*, context: ConversationContext, requested: object) -> int | None:
    """The request's ``recall`` when it has one (``requested`` not None), else the context's setting. A stored
    setting that is not valid (an imported context's) counts as off: the caller cannot fix it in this request."""
    if requested is not None:
        return recall_option(requested)
    stored = context.metadata.get("recall") if isinstance(context.metadata, dict) else None
    try:
        return recall_option(stored, field="metadata.recall")
    except ValidationFailed:
        return None


def recall_into_window(
    *,
    context: ConversationContext,
    prompt: str,
    chat: Sequence[ChatMessage],
    window_tokens: int,
    top_k: int,
) -> tuple[list[ChatMessage], Recalled]:
    """``chat`` with the recalled message inserted after its system messages (unchanged when nothing is recalled
    or nothing fits), and what was recalled. ``window_tokens``: what ``chat`` already costs."""
    query = prompt.strip()[: settings.MEMORY.search.max_query_chars]
    results = memory_search(
        query,
        user=context.owner,
        kinds=[SearchKind.MESSAGE],
        limit=top_k,
        archived_only=True,
        context=context,
    )
    message_ids = [int(hit.entry.object_id) for hit in results.hits]
    # The index row's text is what was indexed; the message itself is what the conversation holds.
    messages = ContextMessage.objects.filter(context=context, archived=True).in_bulk(message_ids)
    room = context.max_tokens - window_tokens
    chosen: list[ContextMessage] = []
    for message_id in message_ids:  # best first: a hit is taken only if the block still fits with it
        message = messages.get(message_id)
        if message is None:
            continue
        if count_tokens(_recall_block([*chosen, message])) <= room:
            chosen.append(message)
    chosen.sort(key=lambda message: message.position)
    recalled = Recalled(
        top_k=top_k,
        message_ids=[message.pk for message in chosen],
        positions=[message.position for message in chosen],
        mode=results.mode,
        degraded=results.degraded,
    )
    if not chosen:
        return list(chat), recalled
    after_system = next((index for index, item in enumerate(chat) if item.role != MessageRole.SYSTEM), len(chat))
    block = ChatMessage(role=MessageRole.SYSTEM, content=_recall_block(chosen))
    return [*chat[:after_system], block, *chat[after_system:]], recalled


def _recall_block(messages: Sequence[ContextMessage]) -> str:
    ordered = sorted(messages, key=lambda message: message.position)
    return "\n".join([RECALL_PREFIX, *(f"- {message.role}: {message.content}" for message in ordered)])

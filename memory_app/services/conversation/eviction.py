"""Eviction: which user and assistant messages leave the window when it is over a budget, and how they leave
(archived, the oldest in one statement, or deleted).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from memory_app.models import ContextMessage, ConversationContext, MessageRole
from memory_app.services.conversation.totals import _other_budgets, _Totals


def _evict(context: ConversationContext, totals: _Totals, *, summarize: bool) -> None:
    others_count, others_tokens = _other_budgets(context, totals, summarize=summarize)
    if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
        return
    # With summaries on, an evicted message stays (archived) until it is folded into the summary, even when
    # keep_archived is off: deleting it first could lose it if the process died before the fold.
    archive = settings.MEMORY.conversation.keep_archived or summarize
    excess = totals.window_count - others_count
    if archive and excess > 0:
        # The usual case, a full window: the oldest ``excess`` messages must go whatever their tokens, so they are
        # archived and reported back in one statement instead of a read and then a write.
        for message_id, token_count in _archive_oldest(context, excess):
            totals.evicted_ids.add(message_id)
            totals.window_count -= 1
            totals.window_tokens -= token_count
        if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
            return
    ids: list[int] = []
    # Oldest active user/assistant messages first; only the window is read, never the archive.
    window = (
        ContextMessage.objects.filter(context=context, archived=False)
        .exclude(role=MessageRole.SYSTEM)
        .order_by("position")
        .values_list("id", "token_count")
    )
    for message_id, token_count in window:
        if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
            break
        ids.append(message_id)
        totals.window_count -= 1
        totals.window_tokens -= token_count
    totals.evicted_ids.update(ids)
    if archive:
        ContextMessage.objects.filter(id__in=ids).update(archived=True)
    else:
        ContextMessage.objects.filter(id__in=ids).delete()


_ARCHIVE_OLDEST_SQL = (
    "UPDATE {messages} SET archived = %s WHERE id IN ("
    "SELECT id FROM {messages} WHERE context_id = %s AND archived = %s AND role <> %s "
    "ORDER BY position LIMIT %s) RETURNING id, token_count, position"
)


def _archive_oldest(context: ConversationContext, count: int) -> list[tuple[int, int]]:
    """Archive the ``count`` oldest active user/assistant messages; their (id, token_count), oldest first."""
    table = connection.ops.quote_name(ContextMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            _ARCHIVE_OLDEST_SQL.format(messages=table),
            [
                True,
                ConversationContext._meta.pk.get_db_prep_value(context.pk, connection),
                False,
                MessageRole.SYSTEM.value,
                count,
            ],
        )
        rows = cursor.fetchall()
    return [(message_id, token_count) for message_id, token_count, _position in sorted(rows, key=lambda row: row[2])]

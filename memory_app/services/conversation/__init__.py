"""Conversation memory (seed §2): the only code that writes contexts and their messages.

The window rule, applied after every append: the active window is every system message plus the longest run of
most recent user/assistant messages that keeps the window's message count ≤ ``max_messages`` and its token total
≤ ``max_tokens``. The others are archived (``conversation.keep_archived``, default) or deleted.

With ``conversation.summarize_evicted`` the window also holds one rolling summary (a system message at position
-1, so it sorts first) into which every evicted message is folded by the LLM provider, after the append has
committed (``context_refresh_summary``). The summary's room is reserved up front — one message slot and
``summary_budget_share * max_tokens`` tokens — so which messages leave the window never depends on the summary.

A message that cannot fit even alone (beside the system messages) is refused with ``CONTEXT_MESSAGE_TOO_LARGE``;
a system message that would make the system messages alone overflow a budget with ``CONTEXT_BUDGET_EXCEEDED``.
Nothing is written in either case.

Concurrency: every append locks the context row (``select_for_update``) for its transaction, so appends to one
context from any number of processes are serialised: positions are 0, 1, 2, … without gaps or duplicates.
The running totals on the context row keep an append O(window). An append by owner and id outside any
transaction (the API's) is computed from the context as read (or as this process's last append to it left it),
then takes the same lock (PostgreSQL: in the one query that also writes; SQLite: the write lock) and writes only
if every column of the context still holds what it was computed from; otherwise nothing is written and the append
is made under the lock as above (``window._append_guarded``, ``persistence.persist_append(guard=True)``).

The package, one module per concern; a module imports only those listed before it:
- ``validation``: roles, message content, the context's limits.
- ``totals``: the running totals and budgets, the context's row lock.
- ``eviction``: which messages leave the window, and how (archived or deleted).
- ``persistence``: writing an append (insert, archive and save the totals; one statement where the database allows).
- ``summary``: the rolling summary, folded after commit.
- ``window``: appending under the window rule (``context_append``, the one append service).
- ``recall``: recalled archived messages added to a generation's window (the ``recall`` option).
- ``lifecycle``: create, get-or-create the default, choose the default, delete, clear.
- ``generate``: generate with context (prompt, provider call, reply).
- ``stream``: generate with context, the reply streamed as the provider produces it.
- ``transfer``: export and import of the §2.3 persistence document.
- ``release``: release of inactive contexts (exported to storage, then removed) and their restore.

Callers import from the package (``from memory_app.services.conversation import context_create``); a test that
replaces a helper patches it in the module that looks it up.
"""

from __future__ import annotations

from memory_app.services.conversation.generate import REPLY_SUFFIX, Generation, context_generate
from memory_app.services.conversation.lifecycle import (
    context_clear,
    context_create,
    context_delete,
    context_get_or_create_default,
    context_set_default,
)
from memory_app.services.conversation.recall import MAX_RECALL_TOP_K, recall_option
from memory_app.services.conversation.release import (
    ReleaseReport,
    context_release,
    contexts_release,
    released_context_restore,
)
from memory_app.services.conversation.stream import (
    ReplyDelta,
    ReplyDone,
    ReplyFailed,
    ReplyStream,
    context_generate_stream,
)
from memory_app.services.conversation.summary import context_refresh_summary
from memory_app.services.conversation.transfer import PERSISTENCE_VERSION, context_export_document, context_import
from memory_app.services.conversation.validation import (
    MISSING,
    ROLES,
    NewMessage,
    limit_validate,
    message_problems,
    message_validate,
)
from memory_app.services.conversation.window import Appended, context_append

__all__ = [
    "MAX_RECALL_TOP_K",
    "MISSING",
    "PERSISTENCE_VERSION",
    "REPLY_SUFFIX",
    "ROLES",
    "Appended",
    "Generation",
    "NewMessage",
    "ReleaseReport",
    "ReplyDelta",
    "ReplyDone",
    "ReplyFailed",
    "ReplyStream",
    "context_append",
    "context_clear",
    "context_create",
    "context_delete",
    "context_export_document",
    "context_generate",
    "context_generate_stream",
    "context_get_or_create_default",
    "context_import",
    "context_refresh_summary",
    "context_release",
    "context_set_default",
    "contexts_release",
    "limit_validate",
    "message_problems",
    "message_validate",
    "recall_option",
    "released_context_restore",
]

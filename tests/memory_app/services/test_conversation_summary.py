"""The rolling summary: folded after the append commits, compare-and-set against concurrent folds."""

from __future__ import annotations

import pytest
from django.db import connection

from memory_app.models import SUMMARY_POSITION, ContextMessage, ConversationContext
from memory_app.providers.llm import OfflineLLM
from memory_app.services.conversation import NewMessage, context_append, context_create, context_refresh_summary
from memory_app.services.conversation import summary as summary_module
from memory_app.services.conversation import window as window_module


@pytest.fixture
def summaries_on(settings):
    def configure(**extra):
        settings.MEMORY = settings.MEMORY.model_copy(
            update={
                "conversation": settings.MEMORY.conversation.model_copy(update={"summarize_evicted": True, **extra})
            }
        )

    configure()
    return configure


@pytest.mark.django_db(transaction=True)
def test_the_provider_is_called_outside_the_append_transaction(summaries_on, user, monkeypatch):
    seen: list[bool] = []
    original = OfflineLLM.summarize

    def spy(self, **kwargs):
        seen.append(connection.in_atomic_block)
        return original(self, **kwargs)

    monkeypatch.setattr(OfflineLLM, "summarize", spy)
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    for content in ["One.", "Two.", "Three."]:
        context_append(context=context, messages=NewMessage(role="user", content=content))

    # Budget for others: 2 - 1 (summary slot) = 1, so "One." and then "Two." were evicted and folded.
    assert seen == [False, False]
    summary = ContextMessage.objects.get(context=context, position=SUMMARY_POSITION)
    assert summary.content == "Summary of earlier conversation: user: One. user: Two."
    context.refresh_from_db()
    assert context.summarized_through == 1


@pytest.mark.django_db
def test_with_keep_archived_off_folded_messages_are_deleted_after_the_fold(summaries_on, user):
    summaries_on(keep_archived=False)
    context = context_create(owner=user, max_messages=3, max_tokens=100)
    for content in ["Ember is a dragon.", "Second.", "Third."]:
        context_append(context=context, messages=NewMessage(role="user", content=content))

    assert list(
        ContextMessage.objects.filter(context=context).order_by("position").values_list("position", "content")
    ) == [
        (SUMMARY_POSITION, "Summary of earlier conversation: user: Ember is a dragon."),
        (1, "Second."),
        (2, "Third."),
    ]


@pytest.mark.django_db
def test_a_concurrent_fold_makes_the_loser_read_again_and_nothing_is_folded_twice(summaries_on, user, monkeypatch):
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    with monkeypatch.context() as patch:
        # The append services look the fold up in their own module: replaced there, the folds stay pending.
        patch.setattr(window_module, "context_refresh_summary", lambda **kwargs: False)
        for content in ["Alpha.", "Beta.", "Gamma."]:
            context_append(context=context, messages=NewMessage(role="user", content=content))
    calls: list[list[str]] = []
    original = summary_module._summary_text

    def racing(context_, previous, pending):
        calls.append([content for _, _, content in pending])
        if len(calls) == 1:
            # Another process folds "Alpha." between our read and our write.
            ConversationContext.objects.filter(pk=context.pk).update(summarized_through=0)
        return original(context_, previous, pending)

    monkeypatch.setattr(summary_module, "_summary_text", racing)

    assert context_refresh_summary(context=context) is True

    assert calls == [["Alpha.", "Beta."], ["Beta."]]
    context.refresh_from_db()
    assert context.summarized_through == 1
    summary = ContextMessage.objects.get(context=context, position=SUMMARY_POSITION)
    assert summary.content == "Summary of earlier conversation: user: Beta."
    assert (context.system_count, context.system_tokens) == (1, summary.token_count)

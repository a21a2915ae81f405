from __future__ import annotations

import pytest

from memory_app.errors import (
    Conflict,
    ContextBudgetExceeded,
    ContextLimitReached,
    ContextMessageTooLarge,
    NotFound,
    ProviderError,
    ValidationFailed,
)
from memory_app.models import SUMMARY_POSITION, ContextMessage, ConversationContext, HistoryRecord
from memory_app.selectors.conversation import context_messages
from memory_app.services.conversation import (
    NewMessage,
    context_append,
    context_clear,
    context_create,
    context_delete,
    context_export_document,
    context_generate,
    context_get_or_create_default,
    context_import,
)
from memory_app.tokens import estimate_tokens

pytestmark = pytest.mark.django_db


def words(count: int, word: str = "word") -> str:
    """Text of ``count`` estimated tokens: each ``word`` (4 letters) is one token."""
    assert estimate_tokens(word) == 1
    return " ".join([word] * count)


def window(context: ConversationContext) -> list[tuple[int, str, str]]:
    return [(m.position, m.role, m.content) for m in context_messages(context=context)]


def stored(context: ConversationContext) -> list[tuple[int, str, bool]]:
    return [(m.position, m.content, m.archived) for m in context_messages(context=context, include_archived=True)]


def test_create_uses_configured_defaults(user):
    context = context_create(owner=user)

    assert (context.max_messages, context.max_tokens, context.context_type) == (20, 32768, "general")
    assert (context.message_count, context.token_count, context.is_default) == (0, 0, False)


@pytest.mark.parametrize(
    ("field", "value"), [("max_messages", 0), ("max_tokens", -1), ("max_messages", "5"), ("max_tokens", 2.5)]
)
def test_create_refuses_bad_limits_and_writes_nothing(user, field, value):
    with pytest.raises(ValidationFailed) as error:
        context_create(owner=user, **{field: value})

    assert list(error.value.details["fields"]) == [field]
    assert ConversationContext.objects.count() == 0


def test_window_keeps_the_most_recent_within_the_message_budget(user):
    context = context_create(owner=user, max_messages=3, max_tokens=1000)
    for index in range(5):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{index}"))

    context.refresh_from_db()
    assert window(context) == [(2, "user", "m2"), (3, "user", "m3"), (4, "user", "m4")]
    assert stored(context) == [
        (0, "m0", True),
        (1, "m1", True),
        (2, "m2", False),
        (3, "m3", False),
        (4, "m4", False),
    ]
    assert (context.message_count, context.token_count, context.next_position) == (3, 3, 5)


def test_window_keeps_every_system_message_and_fits_the_token_budget(user):
    context = context_create(owner=user, max_messages=10, max_tokens=10)
    context_append(context=context, messages=NewMessage(role="system", content=words(2, "rule")))
    context_append(context=context, messages=NewMessage(role="user", content=words(3)))
    context_append(context=context, messages=NewMessage(role="assistant", content=words(3)))
    context_append(context=context, messages=NewMessage(role="user", content=words(4)))

    context.refresh_from_db()
    # 2 (system) + 3 + 4 = 9 ≤ 10; adding the 3-token message at position 1 would make 12.
    assert [(p, r) for p, r, _ in window(context)] == [(0, "system"), (2, "assistant"), (3, "user")]
    assert (context.system_count, context.system_tokens, context.window_count, context.window_tokens) == (1, 2, 2, 7)


def test_message_larger_than_the_budget_is_refused_and_nothing_changes(user):
    context = context_create(owner=user, max_messages=10, max_tokens=5)
    context_append(context=context, messages=NewMessage(role="user", content=words(2)))

    with pytest.raises(ContextMessageTooLarge) as error:
        context_append(context=context, messages=NewMessage(role="user", content=words(6)))

    assert error.value.details["token_count"] == 6
    assert error.value.details["available_tokens"] == 5
    context.refresh_from_db()
    assert stored(context) == [(0, words(2), False)]
    assert (context.window_count, context.window_tokens, context.next_position) == (1, 2, 1)


def test_message_that_fits_only_without_the_system_messages_is_refused(user):
    context = context_create(owner=user, max_messages=10, max_tokens=5)
    context_append(context=context, messages=NewMessage(role="system", content=words(3)))

    with pytest.raises(ContextMessageTooLarge) as error:
        context_append(context=context, messages=NewMessage(role="user", content=words(3)))

    assert error.value.details["available_tokens"] == 2
    assert ContextMessage.objects.filter(context=context).count() == 1


def test_system_messages_alone_over_budget_are_refused(user):
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    context_append(context=context, messages=NewMessage(role="system", content="one"))
    context_append(context=context, messages=NewMessage(role="system", content="two"))

    with pytest.raises(ContextBudgetExceeded):
        context_append(context=context, messages=NewMessage(role="system", content="three"))

    context.refresh_from_db()
    assert (context.system_count, context.next_position) == (2, 2)


def test_a_batch_is_all_or_nothing(user):
    context = context_create(owner=user, max_messages=10, max_tokens=5)

    with pytest.raises(ContextMessageTooLarge) as error:
        context_append(context=context, messages=[NewMessage("user", "fine"), NewMessage("user", words(9))])

    assert error.value.details["index"] == 1
    assert ContextMessage.objects.count() == 0


@pytest.mark.parametrize(
    ("role", "content", "field"),
    [("bot", "hi", "role"), ("user", "", "content"), ("user", "   ", "content"), ("user", "x" * 101, "content")],
)
def test_bad_messages_are_refused_naming_the_field(user, settings, role, content, field):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"max_message_chars": 100})}
    )
    context = context_create(owner=user)

    with pytest.raises(ValidationFailed) as error:
        context_append(context=context, messages=NewMessage(role=role, content=content))

    assert list(error.value.details["fields"]) == [field]
    assert ContextMessage.objects.count() == 0


def test_evicted_messages_are_deleted_when_keep_archived_is_off(user, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"keep_archived": False})}
    )
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    for index in range(4):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{index}"))

    assert stored(context) == [(2, "m2", False), (3, "m3", False)]


def test_rolling_summary_folds_evicted_messages_within_its_share(user, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "conversation": settings.MEMORY.conversation.model_copy(
                update={"summarize_evicted": True, "summary_budget_share": 0.5}
            )
        }
    )
    context = context_create(owner=user, max_messages=4, max_tokens=40)
    context_append(context=context, messages=NewMessage(role="system", content="You draw comics."))
    context_append(context=context, messages=NewMessage(role="user", content="The hero is called Ember."))
    context_append(context=context, messages=NewMessage(role="assistant", content="Ember has red hair."))
    context_append(context=context, messages=NewMessage(role="user", content="Next panel please."))

    context.refresh_from_db()
    summary = ContextMessage.objects.get(context=context, position=SUMMARY_POSITION)
    # Budget for others: 4 messages - 1 system - 1 summary slot = 2; the first user message left the window.
    assert [p for p, _, _ in window(context)] == [SUMMARY_POSITION, 0, 2, 3]
    assert summary.is_summary and summary.role == "system" and not summary.archived
    assert summary.content == "Summary of earlier conversation: user: The hero is called Ember."
    assert summary.token_count == estimate_tokens(summary.content) <= 20
    assert context.system_tokens == estimate_tokens("You draw comics.") + summary.token_count
    assert ContextMessage.objects.get(context=context, position=1).archived is True


def test_clear_keeps_system_messages_and_removes_the_rest(user, project):
    context = context_create(owner=user, max_messages=3, project=project)
    context_append(context=context, messages=NewMessage(role="system", content="persona"))
    for index in range(4):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{index}"))

    context, removed = context_clear(context=context, user=user)

    assert removed == 4  # two archived and two in the window
    assert stored(context) == [(0, "persona", False)]
    assert (context.message_count, context.system_count, context.window_count, context.next_position) == (1, 1, 0, 5)
    context_append(context=context, messages=NewMessage(role="user", content="again"))
    assert window(context) == [(0, "system", "persona"), (5, "user", "again")]
    record = HistoryRecord.objects.get(action="context_cleared")
    assert record.details == {
        "context_id": str(context.id),
        "context_type": "general",
        "removed_messages": 4,
        "kept_system": True,
    }


def test_clear_without_keep_system_removes_everything(user):
    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="system", content="persona"))
    context_append(context=context, messages=NewMessage(role="user", content="hi"))

    context, removed = context_clear(context=context, keep_system=False)

    assert removed == 2
    assert ContextMessage.objects.count() == 0
    assert (context.message_count, context.token_count) == (0, 0)


def test_history_is_recorded_only_for_contexts_with_a_project(user, project):
    with_project = context_create(owner=user, project=project)
    without = context_create(owner=user)
    context_id = str(with_project.id)
    context_delete(context=without, user=user)
    context_delete(context=with_project, user=user)

    actions = list(HistoryRecord.objects.order_by("id").values_list("action", "project_id", "details"))
    assert actions == [
        (
            "context_created",
            "proj-001",
            {"context_id": context_id, "context_type": "general", "max_messages": 20, "max_tokens": 32768},
        ),
        ("context_deleted", "proj-001", {"context_id": context_id, "context_type": "general"}),
    ]
    assert ConversationContext.objects.count() == 0


def test_limit_per_user_is_a_conflict_and_creates_nothing(user, other_user, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"max_contexts_per_user": 2})}
    )
    context_create(owner=user)
    context_create(owner=user)

    with pytest.raises(ContextLimitReached) as error:
        context_create(owner=user)

    assert (error.value.details["limit"], error.value.details["current"]) == (2, 2)
    assert ConversationContext.objects.filter(owner=user).count() == 2
    context_create(owner=other_user)  # the limit is per user


def test_one_default_context_per_user_created_on_first_use(user, other_user):
    first = context_get_or_create_default(owner=user)
    again = context_get_or_create_default(owner=user)
    others = context_get_or_create_default(owner=other_user)

    assert first.pk == again.pk != others.pk
    assert first.is_default
    assert ConversationContext.objects.filter(owner=user, is_default=True).count() == 1
    first_id = first.pk
    context_delete(context=first)
    replacement = context_get_or_create_default(owner=user)
    assert replacement.pk != first_id
    assert replacement.is_default


# --- generate-with-context ---------------------------------------------------------------------------------


def test_generate_appends_prompt_and_reply_from_the_window(user):
    context = context_create(owner=user)
    context_append(
        context=context, messages=NewMessage(role="user", content="The dragon is called Ember. It lives in a cave.")
    )
    context_append(context=context, messages=NewMessage(role="assistant", content="Noted."))

    generation = context_generate(context=context, prompt="What is the dragon called?", request_id="req-1")

    # The offline responder quotes the relevant sentence under where it came from (memory_app/providers/llm.py).
    reply = "From earlier in this conversation:\n- You said: The dragon is called Ember."
    assert generation.reply.content == reply
    assert generation.reply.role == "assistant"
    assert (generation.provider, generation.model, generation.replayed) == ("offline", "offline-extractive", False)
    prompt_tokens = sum(
        estimate_tokens(text)
        for text in ["The dragon is called Ember. It lives in a cave.", "Noted.", "What is the dragon called?"]
    )
    assert generation.usage == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": estimate_tokens(reply),
        "total_tokens": prompt_tokens + estimate_tokens(reply),
    }
    assert [(p, r, c) for p, r, c in window(context)][-2:] == [
        (2, "user", "What is the dragon called?"),
        (3, "assistant", reply),
    ]
    assert ContextMessage.objects.get(position=2).unanswered is False


def test_generate_answer_changes_when_the_fact_leaves_the_window(user):
    context = context_create(owner=user, max_messages=3, max_tokens=1000)
    context_append(context=context, messages=NewMessage(role="user", content="The dragon is called Ember."))
    context_append(context=context, messages=NewMessage(role="user", content="Filler one."))
    context_append(context=context, messages=NewMessage(role="user", content="Filler two."))

    generation = context_generate(context=context, prompt="What is the dragon called?")

    assert generation.reply.content == "Nothing earlier in this conversation relates to: What is the dragon called?"


def test_generate_retry_with_the_same_request_id_after_provider_failure(user, openai_llm):
    context = context_create(owner=user)
    openai_llm.fail(503, {"error": {"message": "overloaded"}})

    with pytest.raises(ProviderError) as error:
        context_generate(context=context, prompt="Draw a cat.", request_id="req-7")

    assert error.value.retryable is True
    assert error.value.details == {
        "provider": "openai",
        "model": "fake-model",
        "status": 503,
        "upstream_message": "overloaded",
    }
    prompt = ContextMessage.objects.get(context=context)
    assert (prompt.content, prompt.unanswered, prompt.request_id) == ("Draw a cat.", True, "req-7")

    openai_llm.reply("A cat, drawn.")
    generation = context_generate(context=context, prompt="Draw a cat.", request_id="req-7")

    assert generation.reply.content == "A cat, drawn."
    assert stored(context) == [(0, "Draw a cat.", False), (1, "A cat, drawn.", False)]
    assert ContextMessage.objects.get(position=0).unanswered is False
    # The window sent on the retry held the prompt exactly once.
    assert [m["content"] for m in openai_llm.requests[-1].body["messages"]] == ["Draw a cat."]

    replay = context_generate(context=context, prompt="Draw a cat.", request_id="req-7")
    assert (replay.replayed, replay.reply.pk, len(openai_llm.requests)) == (True, generation.reply.pk, 2)
    assert ContextMessage.objects.filter(context=context).count() == 2


def test_generate_same_request_id_with_another_prompt_is_a_conflict(user):
    context = context_create(owner=user)
    context_generate(context=context, prompt="first", request_id="req-9")

    with pytest.raises(Conflict):
        context_generate(context=context, prompt="second", request_id="req-9")

    assert ContextMessage.objects.filter(context=context).count() == 2


def test_generate_sends_the_system_instruction_without_storing_it(user, openai_llm):
    context = context_create(owner=user)
    openai_llm.reply("ok")

    context_generate(context=context, prompt="hi", system="Be brief.", temperature=0.3, max_tokens=50)

    body = openai_llm.requests[0].body
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (body["temperature"], body["max_tokens"], body["model"]) == (0.3, 50, "fake-model")
    assert [m.role for m in ContextMessage.objects.filter(context=context)] == ["user", "assistant"]


# --- persistence --------------------------------------------------------------------------------------------


def test_export_then_import_round_trips_everything(user, other_user):
    context = context_create(owner=user, max_messages=3, max_tokens=100, context_type="comic", metadata={"k": 1})
    context_append(context=context, messages=NewMessage(role="system", content="persona"))
    for index in range(4):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{index}"))
    document = context_export_document(contexts=[context], default_context_id=context.id)
    persistence = document["context_persistence"]
    assert (persistence["version"], persistence["default_context_id"]) == ("1.0", str(context.id))
    entry = persistence["contexts"][str(context.id)]
    assert [(m["position"], m["content"], m["archived"]) for m in entry["messages"]] == [
        (0, "persona", False),
        (1, "m0", True),
        (2, "m1", True),
        (3, "m2", False),
        (4, "m3", False),
    ]
    context_id = context.pk
    context.delete()

    (imported,) = context_import(owner=other_user, document=document)

    assert imported.pk == context_id
    assert (imported.owner, imported.context_type, imported.metadata, imported.is_default) == (
        other_user,
        "comic",
        {"k": 1},
        True,
    )
    assert stored(imported) == [
        (0, "persona", False),
        (1, "m0", True),
        (2, "m1", True),
        (3, "m2", False),
        (4, "m3", False),
    ]
    assert (imported.system_count, imported.window_count, imported.next_position) == (1, 2, 5)
    assert [m.created_at.timestamp() for m in imported.messages.order_by("position")] == pytest.approx(
        [m["created_at"] for m in entry["messages"]]
    )
    assert (imported.created_at.timestamp(), imported.last_updated.timestamp()) == pytest.approx(
        (entry["created_at"], entry["last_updated"])
    )


def test_import_of_a_bad_document_imports_nothing(user):
    good = {"conversation_id": "11111111-1111-4111-8111-111111111111", "messages": [{"role": "user", "content": "a"}]}
    bad = {"conversation_id": "22222222-2222-4222-8222-222222222222", "messages": [{"role": "robot", "content": "b"}]}
    document = {
        "context_persistence": {
            "version": "1.0",
            "contexts": {good["conversation_id"]: good, bad["conversation_id"]: bad},
        }
    }

    with pytest.raises(ValidationFailed) as error:
        context_import(owner=user, document=document)

    assert list(error.value.details["fields"]) == [f"contexts.{bad['conversation_id']}.messages.0.role"]
    assert ConversationContext.objects.count() == 0


def test_import_that_fails_midway_rolls_back(user):
    fits = {"conversation_id": "11111111-1111-4111-8111-111111111111", "messages": [{"role": "user", "content": "a"}]}
    too_big = {
        "conversation_id": "22222222-2222-4222-8222-222222222222",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": words(5)}],
    }
    document = {
        "context_persistence": {"version": "1.0", "contexts": {c["conversation_id"]: c for c in (fits, too_big)}}
    }

    with pytest.raises(ContextMessageTooLarge):
        context_import(owner=user, document=document)

    assert (ConversationContext.objects.count(), ContextMessage.objects.count()) == (0, 0)


def test_import_refuses_taken_ids_and_wrong_versions(user):
    context = context_create(owner=user)
    document = context_export_document(contexts=[context])

    with pytest.raises(Conflict) as error:
        context_import(owner=user, document=document)
    assert error.value.details == {"context_ids": [str(context.id)]}

    document["context_persistence"]["version"] = "9"
    with pytest.raises(ValidationFailed) as error:
        context_import(owner=user, document=document)
    assert list(error.value.details["fields"]) == ["context_persistence.version"]
    assert ConversationContext.objects.count() == 1


def test_summary_falls_back_to_offline_when_the_provider_fails(user, settings, openai_llm):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"summarize_evicted": True})}
    )
    context = context_create(owner=user, max_messages=3, max_tokens=100)
    openai_llm.fail(500)
    for content in ["Ember is a dragon.", "Second.", "Third."]:
        context_append(context=context, messages=NewMessage(role="user", content=content))

    summary = ContextMessage.objects.get(context=context, is_summary=True)
    assert summary.content == "Summary of earlier conversation: user: Ember is a dragon."
    assert [r.path for r in openai_llm.requests] == ["/v1/chat/completions"]
    assert [p for p, _, _ in window(context)] == [SUMMARY_POSITION, 1, 2]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"created_at": 1e20}, "created_at"),
        ({"last_updated": "yesterday"}, "last_updated"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_messages": 0}, "max_messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ],
)
def test_import_refuses_bad_fields_naming_them(user, change, field):
    key = "11111111-1111-4111-8111-111111111111"
    entry = {"conversation_id": key, "messages": [{"role": "user", "content": "a"}], **change}
    document = {"context_persistence": {"version": "1.0", "contexts": {key: entry}}}

    with pytest.raises(ValidationFailed) as error:
        context_import(owner=user, document=document)

    assert list(error.value.details["fields"]) == [f"context_persistence.contexts.{key}.{field}"]
    assert ConversationContext.objects.count() == 0


def test_sensitive_metadata_keys_are_redacted_when_stored(user):
    context = context_create(owner=user, metadata={"style": "manga", "nested": {"api_key": "sk-1"}})

    context.refresh_from_db()
    assert context.metadata == {"style": "manga", "nested": {"api_key": "[REDACTED]"}}


def test_append_to_a_context_deleted_meanwhile_is_not_found(user):
    context = context_create(owner=user)
    ConversationContext.objects.filter(pk=context.pk).delete()

    with pytest.raises(NotFound) as error:
        context_append(context=context, messages=NewMessage(role="user", content="hi"))

    assert error.value.details["context_id"] == str(context.pk)
    assert ContextMessage.objects.count() == 0


def test_a_reply_stream_closed_after_its_first_piece_still_stores_the_whole_reply(user, openai_llm):
    from memory_app.services.conversation import ReplyDelta, ReplyDone, context_generate_stream

    context = context_create(owner=user)
    openai_llm.reply("A long answer in many words.")
    closed = []
    stream = context_generate_stream(context=context, prompt="Tell me.", request_id="req-s")
    stream.call_on_close(lambda: closed.append(True))

    first = next(iter(stream))
    assert first == ReplyDelta("A")
    assert ContextMessage.objects.filter(context=context, role="assistant").count() == 0
    stream.close()

    assert closed == [True]
    assert isinstance(stream.outcome, ReplyDone)
    reply = ContextMessage.objects.get(context=context, role="assistant")
    assert reply.content == "A long answer in many words."
    assert stream.outcome.generation.reply.pk == reply.pk
    again = context_generate_stream(context=context, prompt="Tell me.", request_id="req-s")
    assert list(again) == [ReplyDelta(reply.content), again.outcome]
    assert again.outcome.generation.replayed
    assert len(openai_llm.requests) == 1

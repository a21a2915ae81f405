"""Recall in generate-with-context: archived messages of the context that match the prompt are added to the window
sent to the provider, within the token budget, marked as recalled, never stored."""

from __future__ import annotations

import pytest

from memory_app.errors import ValidationFailed
from memory_app.models import ContextMessage, ConversationContext, SearchKind
from memory_app.providers.llm import RECALL_PREFIX
from memory_app.services.conversation import NewMessage, context_append, context_create, context_generate
from memory_app.services.search import search_entries_write, search_entry_build
from memory_app.tokens import count_tokens

pytestmark = pytest.mark.django_db

CAT = "小明的猫叫豆豆\uff0c是一只橘猫。"
HOUSE = "小明住在海边的白色房子里。"
FILLER = ["今天天气很好。", "我们去公园散步吧。", "晚饭吃面条。"]


def index_messages(context: ConversationContext) -> None:
    """The index rows of the context's messages (the append path writes them once indexing lands there)."""
    search_entries_write(
        search_entry_build(
            kind=SearchKind.MESSAGE,
            object_id=message.pk,
            owner_id=context.owner_id,
            project_id=context.project_id,
            text=message.content,
            created_at=message.created_at,
        )
        for message in ContextMessage.objects.filter(context=context, is_summary=False)
    )


def conversation(user, *, max_tokens: int | None = None, metadata: dict | None = None) -> ConversationContext:
    """A context whose window holds 3 messages: CAT and HOUSE are archived, the fillers are the window; then
    ``max_tokens`` is set (the next append, the prompt, applies it)."""
    context = context_create(owner=user, max_messages=3, max_tokens=32768, metadata=metadata)
    for content in [CAT, HOUSE, *FILLER]:
        context_append(context=context, messages=NewMessage(role="user", content=content))
    if max_tokens is not None:
        ConversationContext.objects.filter(pk=context.pk).update(max_tokens=max_tokens)
    assert set(ContextMessage.objects.filter(context=context, archived=True).values_list("content", flat=True)) == {
        CAT,
        HOUSE,
    }
    index_messages(context)
    context.refresh_from_db()
    return context


def sent_messages(server) -> list[dict]:
    return server.requests[-1].body["messages"]


def recall_blocks(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "system" and m["content"].startswith(RECALL_PREFIX)]


def test_recall_sends_the_matching_archived_message_marked_as_recalled(user, openai_llm):
    context = conversation(user)
    cat = ContextMessage.objects.get(context=context, content=CAT)
    openai_llm.reply("豆豆是橘猫。")

    generation = context_generate(context=context, prompt="豆豆是什么颜色的猫\uff1f", recall=True)

    sent = sent_messages(openai_llm)
    assert recall_blocks(sent) == [f"{RECALL_PREFIX}\n- user: {CAT}"]
    assert sent[0]["content"].startswith(RECALL_PREFIX)  # before the turns, not as one of the latest
    assert [m["content"] for m in sent[1:]] == [*FILLER[1:], "豆豆是什么颜色的猫\uff1f"]
    assert generation.recall == {
        "top_k": 3,
        "message_ids": [cat.pk],
        "positions": [cat.position],
        "mode": "lexical",
        "degraded": None,
    }
    assert generation.reply.metadata["recall"] == generation.recall
    # Nothing new is stored: the prompt and the reply only.
    assert ContextMessage.objects.filter(context=context).count() == 7
    assert not ContextMessage.objects.filter(context=context, content__startswith=RECALL_PREFIX).exists()


def test_recall_is_off_by_default_and_sends_nothing_extra(user, openai_llm):
    context = conversation(user)
    openai_llm.reply("不知道。")

    generation = context_generate(context=context, prompt="豆豆是什么颜色的猫\uff1f")

    sent = sent_messages(openai_llm)
    assert recall_blocks(sent) == []
    assert [m["content"] for m in sent] == [*FILLER[1:], "豆豆是什么颜色的猫\uff1f"]
    assert generation.recall is None
    assert "recall" not in generation.reply.metadata


def test_the_contexts_setting_turns_recall_on_and_the_request_can_turn_it_off(user, openai_llm):
    context = conversation(user, metadata={"recall": {"top_k": 1}})
    openai_llm.reply("好。")
    openai_llm.reply("好。")

    on = context_generate(context=context, prompt="豆豆和海边的房子", recall=None)
    assert len(recall_blocks(sent_messages(openai_llm))) == 1
    assert on.recall is not None and on.recall["top_k"] == 1 and len(on.recall["message_ids"]) == 1

    off = context_generate(context=context, prompt="豆豆和海边的房子", recall=False)
    assert recall_blocks(sent_messages(openai_llm)) == []
    assert off.recall is None


def test_recall_takes_fewer_messages_when_the_token_budget_is_short(user, openai_llm):
    # Both archived messages match the prompt; the budget leaves room for the block with one of them only.
    prompt = "小明的猫和小明的房子"
    one = count_tokens(f"{RECALL_PREFIX}\n- user: {CAT}")
    both = count_tokens(f"{RECALL_PREFIX}\n- user: {CAT}\n- user: {HOUSE}")
    assert both > one
    # The window sent after the prompt: the two most recent fillers and the prompt.
    window_after = count_tokens(FILLER[1]) + count_tokens(FILLER[2]) + count_tokens(prompt)
    context = conversation(user, max_tokens=window_after + both - 1)
    openai_llm.reply("好。")

    generation = context_generate(context=context, prompt=prompt, recall={"top_k": 5})

    sent = sent_messages(openai_llm)
    assert sum(count_tokens(m["content"]) for m in sent) <= context.max_tokens
    assert len(recall_blocks(sent)) == 1
    assert generation.recall is not None and len(generation.recall["message_ids"]) == 1


def test_recall_adds_nothing_when_no_room_is_left(user, openai_llm):
    prompt = "小明的猫"
    window_after = count_tokens(FILLER[1]) + count_tokens(FILLER[2]) + count_tokens(prompt)
    context = conversation(user, max_tokens=window_after + 1)
    openai_llm.reply("好。")

    generation = context_generate(context=context, prompt=prompt, recall=True)

    assert recall_blocks(sent_messages(openai_llm)) == []
    assert generation.recall is not None and generation.recall["message_ids"] == []


def test_recall_searches_only_this_contexts_archived_messages(user, openai_llm):
    context = conversation(user)
    other = conversation(user)  # the same archived texts in another context
    openai_llm.reply("好。")

    generation = context_generate(context=context, prompt="豆豆", recall=True)

    assert generation.recall is not None
    assert set(
        ContextMessage.objects.filter(pk__in=generation.recall["message_ids"]).values_list("context", flat=True)
    ) == {context.pk}
    assert not ContextMessage.objects.filter(context=other, pk__in=generation.recall["message_ids"]).exists()


def test_offline_provider_answers_from_the_recalled_message(user):
    without = context_generate(context=conversation(user), prompt="豆豆是什么颜色的猫\uff1f")
    with_recall = context_generate(context=conversation(user), prompt="豆豆是什么颜色的猫\uff1f", recall=True)

    assert "橘猫" not in without.reply.content
    assert with_recall.reply.content == f"根据本次对话中之前的内容\uff1a\n- 之前提到过\uff1a{CAT}"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("yes", "recall"),
        (3, "recall"),
        ({"top_k": 0}, "recall.top_k"),
        ({"top_k": 21}, "recall.top_k"),
        ({"top_k": True}, "recall.top_k"),
        ({"k": 2}, "recall"),
    ],
)
def test_a_bad_recall_value_is_refused_before_anything_is_written(user, value, field):
    context = conversation(user)
    before = ContextMessage.objects.filter(context=context).count()

    with pytest.raises(ValidationFailed) as error:
        context_generate(context=context, prompt="豆豆", recall=value)

    assert list(error.value.details["fields"]) == [field]
    assert ContextMessage.objects.filter(context=context).count() == before


def test_a_degraded_search_says_so_in_the_answer(user, openai_llm, monkeypatch):
    from memory_app.selectors.search import SearchResults
    from memory_app.services.conversation import recall as recall_module

    context = conversation(user)
    monkeypatch.setattr(
        recall_module,
        "memory_search",
        lambda *args, **kwargs: SearchResults(hits=[], mode="lexical", degraded="embeddings endpoint failed"),
    )
    openai_llm.reply("好。")

    generation = context_generate(context=context, prompt="豆豆", recall=True)

    assert generation.recall == {
        "top_k": 3,
        "message_ids": [],
        "positions": [],
        "mode": "lexical",
        "degraded": "embeddings endpoint failed",
    }
    assert recall_blocks(sent_messages(openai_llm)) == []

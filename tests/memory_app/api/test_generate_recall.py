"""``recall`` in generate-with-context (JSON and streamed) and a context's ``metadata.recall``, over the API."""

from __future__ import annotations

import pytest

from memory_app.models import ContextMessage, ConversationContext
from memory_app.providers.llm import RECALL_PREFIX
from tests.memory_app.api.test_generate_stream import sse_events
from tests.memory_app.services.test_conversation_recall import CAT, conversation, recall_blocks

pytestmark = pytest.mark.django_db

GENERATE = "/api/context/generate-with-context"


def test_generate_with_recall_answers_what_was_recalled(auth_client, user, openai_llm):
    context = conversation(user)
    cat = ContextMessage.objects.get(context=context, content=CAT)
    openai_llm.reply("橘猫。")

    response = auth_client.post(
        GENERATE, {"context_id": str(context.id), "prompt": "豆豆是什么猫\uff1f", "recall": {"top_k": 2}}, "json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["recall"] == {
        "top_k": 2,
        "message_ids": [cat.pk],
        "positions": [cat.position],
        "mode": "lexical",
        "degraded": None,
    }
    assert recall_blocks(openai_llm.requests[-1].body["messages"]) == [f"{RECALL_PREFIX}\n- user: {CAT}"]


def test_generate_without_recall_answers_null(auth_client, user, openai_llm):
    context = conversation(user)
    openai_llm.reply("好。")

    response = auth_client.post(GENERATE, {"context_id": str(context.id), "prompt": "豆豆是什么猫\uff1f"}, "json")

    assert response.status_code == 200
    assert response.json()["data"]["recall"] is None
    assert recall_blocks(openai_llm.requests[-1].body["messages"]) == []


def test_streamed_generate_with_recall_sends_the_recalled_message(auth_client, user, openai_llm):
    context = conversation(user)
    cat = ContextMessage.objects.get(context=context, content=CAT)
    openai_llm.reply("橘猫。")

    response = auth_client.post(
        GENERATE,
        {"context_id": str(context.id), "prompt": "豆豆是什么猫\uff1f", "recall": True, "stream": True},
        "json",
    )

    events = sse_events(response)
    assert events[-1][0] == "done"
    assert events[-1][1]["recall"]["message_ids"] == [cat.pk]
    assert recall_blocks(openai_llm.requests[-1].body["messages"]) == [f"{RECALL_PREFIX}\n- user: {CAT}"]
    assert openai_llm.requests[-1].body["stream"] is True


@pytest.mark.parametrize("value", ["yes", 1, [], {"top_k": 0}, {"top_k": 21}, {"top_k": "3"}, {"k": 1}])
def test_a_bad_recall_is_400_naming_the_field_and_changes_nothing(auth_client, user, value):
    response = auth_client.post(GENERATE, {"prompt": "豆豆是什么猫\uff1f", "recall": value}, "json")

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert list(body["error"]["details"]["fields"]) == ["recall"]
    assert not ConversationContext.objects.filter(owner=user).exists()  # not even the default context
    assert not ContextMessage.objects.exists()


def test_a_contexts_recall_setting_is_checked_when_it_is_created(auth_client, user):
    response = auth_client.post("/api/context/", {"metadata": {"recall": {"top_k": 50}}}, "json")

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]["fields"]) == ["metadata.recall.top_k"]
    assert not ConversationContext.objects.filter(owner=user).exists()

    created = auth_client.post("/api/context/", {"metadata": {"recall": True}}, "json")
    assert created.status_code == 201
    assert created.json()["data"]["metadata"] == {"recall": True}

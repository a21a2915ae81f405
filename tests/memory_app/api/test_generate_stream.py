"""Generate-with-context with ``"stream": true``: Server-Sent Events through the Django test client (WSGI)."""

from __future__ import annotations

import json

import jieba
import pytest

from memory_app.models import ContextMessage, ConversationContext
from memory_app.services.conversation import NewMessage, context_append, context_create

GENERATE = "/api/context/generate-with-context"


def sse_events(response) -> list[tuple[str, dict]]:
    """(event, data) of each event of a streamed response, in order."""
    assert response["Content-Type"].startswith("text/event-stream")
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def deltas(events: list[tuple[str, dict]]) -> list[str]:
    return [data["content"] for name, data in events if name == "delta"]


def test_streamed_reply_from_an_openai_compatible_server(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.reply("Once upon a time, a blue castle.")

    response = auth_client.post(GENERATE, {"context_id": str(context.id), "prompt": "Tell me.", "stream": True}, "json")

    assert response.status_code == 200
    events = sse_events(response)
    assert deltas(events) == ["Once", " upon", " a", " time,", " a", " blue", " castle."]
    assert [name for name, _ in events] == ["delta"] * 7 + ["done"]
    done = events[-1][1]
    stored = ContextMessage.objects.get(context=context, role="assistant")
    assert "".join(deltas(events)) == stored.content == done["message"]["content"]
    assert done["message"]["position"] == stored.position == 1
    assert done["prompt_position"] == 0
    assert done["context_id"] == str(context.id)
    # The fake's usage: its words; the usage chunk asked for by stream_options.
    assert done["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
    assert (done["provider"], done["model"], done["replayed"]) == ("openai", "fake-model", False)
    sent = openai_llm.requests[-1].body
    assert (sent["stream"], sent["stream_options"]) == (True, {"include_usage": True})
    assert not ContextMessage.objects.get(context=context, role="user").unanswered


def test_offline_provider_streams_its_reply_word_by_word(auth_client, user):
    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="user", content="城堡是蓝色的。"))

    events = sse_events(
        auth_client.post(
            GENERATE, {"context_id": str(context.id), "prompt": "城堡是什么颜色\uff1f", "stream": True}, "json"
        )
    )

    stored = ContextMessage.objects.get(context=context, role="assistant")
    assert stored.content == "根据本次对话中之前的内容\uff1a\n- 你说过\uff1a城堡是蓝色的。"
    assert deltas(events) == [word for word in jieba.lcut(stored.content) if word]
    assert len(deltas(events)) > 5
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == stored.content
    assert events[-1][1]["provider"] == "offline"


def test_a_repeated_request_id_streams_the_stored_reply_once(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.reply("Here is a cat.")
    body = {"context_id": str(context.id), "prompt": "Draw a cat.", "stream": True}

    first = sse_events(auth_client.post(GENERATE, body, "json", HTTP_X_REQUEST_ID="req-7"))
    again = sse_events(auth_client.post(GENERATE, body, "json", HTTP_X_REQUEST_ID="req-7"))
    plain = auth_client.post(GENERATE, {**body, "stream": False}, "json", HTTP_X_REQUEST_ID="req-7")

    assert deltas(first) == ["Here", " is", " a", " cat."]
    assert again[0] == ("delta", {"content": "Here is a cat."})
    assert [name for name, _ in again] == ["delta", "done"]
    assert again[1][1]["replayed"] is True
    assert again[1][1]["usage"] == first[-1][1]["usage"]
    assert plain.json()["data"]["message"]["content"] == "Here is a cat."
    assert len(openai_llm.requests) == 1
    assert ContextMessage.objects.filter(context=context).count() == 2


def test_a_failure_mid_stream_ends_with_an_error_event_and_stores_no_reply(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.reply("Here is a cat.", cut_after=2)
    body = {"context_id": str(context.id), "prompt": "Draw a cat.", "stream": True}

    events = sse_events(auth_client.post(GENERATE, body, "json", HTTP_X_REQUEST_ID="req-8"))

    assert deltas(events) == ["Here", " is"]
    name, error = events[-1]
    assert name == "error"
    assert (error["status"], error["code"]) == (502, "PROVIDER_ERROR")
    assert "cut short" in error["message"]
    assert list(ContextMessage.objects.values_list("role", "unanswered")) == [("user", True)]

    openai_llm.reply("Here is a cat.")
    retried = sse_events(auth_client.post(GENERATE, body, "json", HTTP_X_REQUEST_ID="req-8"))
    assert "".join(deltas(retried)) == "Here is a cat."
    assert list(ContextMessage.objects.order_by("position").values_list("role", "content", "unanswered")) == [
        ("user", "Draw a cat.", False),
        ("assistant", "Here is a cat.", False),
    ]


def test_a_provider_that_fails_before_answering_is_a_502_envelope(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.fail(503)

    response = auth_client.post(GENERATE, {"context_id": str(context.id), "prompt": "x", "stream": True}, "json")

    assert response.status_code == 502
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "PROVIDER_ERROR"
    assert list(ContextMessage.objects.values_list("role", "unanswered")) == [("user", True)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stream": True}, "prompt"),
        ({"prompt": "", "stream": True}, "prompt"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "stream": 1}, "stream"),
        ({"prompt": "x", "temperature": 3, "stream": True}, "temperature"),
    ],
)
def test_streamed_bad_input_is_a_400_envelope_before_any_stream(auth_client, body, field):
    response = auth_client.post(GENERATE, body, format="json")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert list(response.json()["error"]["details"]["fields"]) == [field]
    assert (ConversationContext.objects.count(), ContextMessage.objects.count()) == (0, 0)


def test_streamed_generate_in_someone_elses_context_is_404(auth_client, other_user):
    theirs = context_create(owner=other_user)

    response = auth_client.post(GENERATE, {"context_id": str(theirs.id), "prompt": "hi", "stream": True}, "json")

    assert response.status_code == 404
    assert ContextMessage.objects.count() == 0


def test_the_llm_slot_is_held_for_the_stream_and_given_back_at_its_end(auth_client, user, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"api": settings.MEMORY.api.model_copy(update={"llm_calls_per_user": 1})}
    )
    open_stream = auth_client.post(GENERATE, {"prompt": "hello", "stream": True}, "json")
    assert open_stream.status_code == 200

    refused = auth_client.post(GENERATE, {"prompt": "hello again", "stream": True}, "json")
    assert refused.status_code == 429

    sse_events(open_stream)  # read to the end: the response is closed and the slot given back
    after = auth_client.post(GENERATE, {"prompt": "hello again", "stream": True}, "json")
    assert after.status_code == 200
    assert sse_events(after)[-1][0] == "done"

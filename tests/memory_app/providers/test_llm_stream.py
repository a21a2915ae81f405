"""``chat_stream`` of both LLM providers: the OpenAI-compatible one over real HTTP (the fake server's SSE), the
offline one word by word."""

from __future__ import annotations

import json

import jieba
import pytest

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.llm import ChatMessage, ChatResult, OfflineLLM, OpenAICompatibleLLM
from tests.fakes.openai_server import RawAnswer


def make(server, **overrides) -> OpenAICompatibleLLM:
    config = {"provider": "openai", "base_url": server.base_url, "api_key": "sk-x", "model": "fake-model"}
    return OpenAICompatibleLLM(ProviderConfig(**{**config, "timeout_seconds": 1.0, **overrides}))


def user(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


def split(chunks) -> tuple[list[str], ChatResult]:
    *pieces, result = list(chunks)
    assert all(isinstance(piece, str) for piece in pieces)
    assert isinstance(result, ChatResult)
    return pieces, result


def sse(*documents: dict | str) -> RawAnswer:
    lines = [f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n".encode() for d in documents]
    return RawAnswer(iter(lines), content_type="text/event-stream")


def chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {"object": "chat.completion.chunk", "model": "m-1", "choices": [{"delta": delta, "finish_reason": finish}]}


def test_openai_streams_pieces_then_the_result_with_the_server_s_usage(fake_openai):
    fake_openai.reply("Hi there, friend")

    pieces, result = split(make(fake_openai).chat_stream(messages=[user("hello you")], max_tokens=20))

    assert pieces == ["Hi", " there,", " friend"]
    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("Hi there, friend", 2, 3)
    assert (result.model, result.provider) == ("fake-model", "openai")
    (request,) = fake_openai.requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["max_tokens"] == 20


def test_openai_stream_without_usage_is_counted_by_us(fake_openai):
    fake_openai.reply_raw(sse(chunk("Bonjour"), chunk(" tout le monde"), chunk(finish="stop"), "[DONE]"))

    pieces, result = split(make(fake_openai).chat_stream(messages=[user("salut")]))

    assert pieces == ["Bonjour", " tout le monde"]
    assert result.model == "m-1"
    assert result.completion_tokens > 0 and result.prompt_tokens > 0


def test_openai_stream_cut_short_is_retryable_after_its_pieces(fake_openai):
    fake_openai.reply("one two three", cut_after=2)
    received = []

    with pytest.raises(RetryableProviderError) as raised:
        received.extend(make(fake_openai).chat_stream(messages=[user("x")]))

    assert received == ["one", " two"]
    assert "cut short" in raised.value.message


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (400, False)])
def test_openai_stream_http_errors_are_provider_errors(fake_openai, status, retryable):
    fake_openai.fail(status)

    with pytest.raises(ProviderError) as raised:
        next(make(fake_openai).chat_stream(messages=[user("x")]))

    assert raised.value.retryable is retryable
    assert raised.value.details["status"] == status


def test_openai_stream_error_event_is_a_provider_error(fake_openai):
    fake_openai.reply_raw(sse(chunk("Hel"), {"error": {"message": "overloaded"}}))

    with pytest.raises(ProviderError) as raised:
        list(make(fake_openai).chat_stream(messages=[user("x")]))

    assert "overloaded" in raised.value.message


def test_openai_stream_that_stalls_times_out(fake_openai):
    fake_openai.reply("slow words here")
    fake_openai.pace(1.0)

    with pytest.raises(RetryableProviderError) as raised:
        list(make(fake_openai, timeout_seconds=0.3).chat_stream(messages=[user("x")]))

    assert raised.value.message == "The LLM provider timed out."


def test_openai_stream_over_the_limit_is_refused_while_it_is_read(fake_openai):
    fake_openai.reply(" ".join(["word"] * 1000))

    with pytest.raises(ProviderError) as raised:
        list(make(fake_openai, max_answer_bytes=2048).chat_stream(messages=[user("x")]))

    assert type(raised.value) is ProviderError
    assert raised.value.details["limit_bytes"] == 2048


def test_openai_stream_drops_nul_from_pieces(fake_openai):
    fake_openai.reply_raw(sse(chunk("a\u0000b"), chunk(finish="stop"), "[DONE]"))

    pieces, result = split(make(fake_openai).chat_stream(messages=[user("x")]))

    assert pieces == ["ab"] and result.content == "ab"


def test_offline_streams_the_same_reply_word_by_word():
    messages = [
        user("我的猫叫麻糬\uff0c它喜欢睡觉。"),
        ChatMessage(role="assistant", content="好的。"),
        user("我的猫叫什么\uff1f"),
    ]

    pieces, result = split(OfflineLLM().chat_stream(messages=messages))

    assert result == OfflineLLM().chat(messages=messages)
    assert "".join(pieces) == result.content
    assert pieces == [word for word in jieba.lcut(result.content) if word]
    assert "麻糬" in result.content
    assert len(pieces) > 10

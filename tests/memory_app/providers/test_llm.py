from __future__ import annotations

import socket

import pytest

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.llm import (
    SUMMARY_PREFIX,
    ChatMessage,
    OfflineLLM,
    OpenAICompatibleLLM,
    llm_provider,
)
from memory_app.tokens import estimate_tokens
from tests.fakes.openai_server import RawAnswer


def user(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


def test_offline_answers_from_the_sentences_that_share_words_with_the_prompt():
    window = [
        ChatMessage(role="system", content="You help write comics."),
        user("小明是一个勇敢的少年。他住在海边的小镇。"),
        ChatMessage(role="assistant", content="好的。小明的头发是黑色的。"),
        user("小明住在哪里?"),
    ]

    result = OfflineLLM().chat(messages=window)

    # "住" (one sentence holds it) weighs more than "小明" (two do); all three score within half of the best, and
    # come back in conversation order under who said them, in Chinese for a Chinese prompt.
    assert result.content == (
        "根据本次对话中之前的内容\uff1a\n"
        "- 你说过\uff1a小明是一个勇敢的少年。\n"
        "- 你说过\uff1a他住在海边的小镇。\n"
        "- 我说过\uff1a小明的头发是黑色的。"
    )
    assert result.prompt_tokens == sum(estimate_tokens(m.content) for m in window)
    assert result.completion_tokens == estimate_tokens(result.content)
    assert (result.provider, result.model) == ("offline", "offline-extractive")


def test_offline_says_so_when_nothing_relates():
    result = OfflineLLM().chat(messages=[user("Clouds are white."), user("Where is the dragon?")])

    assert result.content == "Nothing earlier in this conversation relates to: Where is the dragon?"


def test_offline_respects_max_tokens():
    result = OfflineLLM().chat(messages=[user("The dragon sleeps in a very deep cave."), user("dragon")], max_tokens=3)

    assert result.content == "From earlier i"  # the header cut: 12 letters, ceil(12 / 4) = 3
    assert estimate_tokens(result.content) == 3


def test_offline_summary_stays_within_its_budget_and_keeps_the_frequent_facts():
    messages = [
        user("Ember is a red dragon."),
        ChatMessage(role="assistant", content="Ember guards the village. The weather is nice."),
        user("Ember likes gold."),
    ]

    summary = OfflineLLM().summarize(previous_summary=None, messages=messages, max_tokens=30)

    assert summary.startswith(SUMMARY_PREFIX)
    assert estimate_tokens(summary) <= 30
    assert "Ember" in summary
    assert "weather" not in summary  # the least connected sentence is the one left out


def test_factory_returns_the_configured_provider(fake_openai):
    assert isinstance(llm_provider(ProviderConfig()), OfflineLLM)
    provider = llm_provider(ProviderConfig(provider="openai", base_url=fake_openai.base_url, model="m"))
    assert isinstance(provider, OpenAICompatibleLLM)
    with pytest.raises(ProviderError) as error:
        llm_provider(ProviderConfig(provider="openai"))
    assert error.value.retryable is False


def make(server, **overrides) -> OpenAICompatibleLLM:
    config = {"provider": "openai", "base_url": server.base_url, "api_key": "sk-x", "model": "fake-model"}
    return OpenAICompatibleLLM(ProviderConfig(**{**config, "timeout_seconds": 1.0, **overrides}))


def test_openai_speaks_chat_completions_over_http(fake_openai):
    fake_openai.reply("Hi there")

    result = make(fake_openai).chat(messages=[user("hello you")], temperature=0.5, max_tokens=20)

    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("Hi there", 2, 2)
    (request,) = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-x"
    assert request.body == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hello you"}],
        "temperature": 0.5,
        "max_tokens": 20,
    }


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (401, False)])
def test_openai_http_errors_are_provider_errors(fake_openai, status, retryable):
    fake_openai.fail(status)

    with pytest.raises(ProviderError) as error:
        make(fake_openai).chat(messages=[user("x")])

    assert error.value.retryable is retryable
    assert isinstance(error.value, RetryableProviderError) is retryable
    assert error.value.details["status"] == status
    assert len(fake_openai.requests) == 1  # no hidden retries


def test_openai_timeout_is_retryable(fake_openai):
    fake_openai.reply("late", delay=2.0)

    with pytest.raises(RetryableProviderError) as error:
        make(fake_openai, timeout_seconds=0.3).chat(messages=[user("x")])

    assert error.value.message == "The LLM provider timed out."


def test_openai_connection_refused_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ProviderConfig(provider="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_seconds=1)

    with pytest.raises(RetryableProviderError):
        OpenAICompatibleLLM(config).chat(messages=[user("x")])


def test_openai_summary_is_cut_to_our_budget(fake_openai):
    fake_openai.reply("word " * 50)

    summary = make(fake_openai).summarize(previous_summary="Earlier.", messages=[user("a b c")], max_tokens=10)

    assert estimate_tokens(summary) == 10
    assert summary.startswith(SUMMARY_PREFIX)
    sent = fake_openai.requests[0].body["messages"]
    assert sent[1] == {"role": "user", "content": "Earlier.\nuser: a b c"}
    assert fake_openai.requests[0].body["max_tokens"] == 10


def test_openai_providers_of_one_endpoint_share_one_client(fake_openai):
    fake_openai.reply("one")
    first = make(fake_openai)
    second = make(fake_openai)
    other_key = make(fake_openai, api_key="sk-other")

    assert second._client is first._client
    assert other_key._client is not first._client
    assert first.chat(messages=[user("hello")]).content == "one"
    fake_openai.reply("two")
    assert second.chat(messages=[user("hello again")]).content == "two"


# --- malformed answers, over real HTTP ----------------------------------------------------------------------

CUT = b'{"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hel'
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
NOT_JSON = "cut short, or a page from something in between."


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (
            RawAnswer(CUT),
            RetryableProviderError,
            f"The LLM provider's answer is not JSON (application/json, 85 bytes): {NOT_JSON[:-1]}: "
            + repr(CUT.decode()),
        ),
        (
            RawAnswer(HTML, content_type="text/html"),
            RetryableProviderError,
            f"The LLM provider's answer is not JSON (text/html, 50 bytes): {NOT_JSON[:-1]}: " + repr(HTML.decode()),
        ),
        (
            RawAnswer(CUT, declared_length=500),
            RetryableProviderError,
            "The LLM provider's answer was cut short: peer closed connection without sending complete message body "
            "(received 85 bytes, expected 500)",
        ),
        (RawAnswer(b"[1, 2]"), ProviderError, "The LLM provider's answer is not a JSON object."),
        (RawAnswer(b'{"choices": "x"}'), ProviderError, "The LLM provider returned no message."),
        (
            RawAnswer(b'{"choices": [{"message": {"content": 7}}]}'),
            ProviderError,
            "The LLM provider returned no message.",
        ),
    ],
)
def test_openai_malformed_answers_are_provider_errors(fake_openai, answer, error, message):
    fake_openai.reply_raw(answer)

    with pytest.raises(ProviderError) as raised:
        make(fake_openai).chat(messages=[user("x")])

    assert type(raised.value) is error
    assert raised.value.message == message
    assert len(fake_openai.requests) == 1


def test_openai_answer_over_the_limit_is_refused_while_it_is_read(fake_openai):
    # 8 MiB, streamed with no length: refused once 1 MiB has been read, the rest never sent.
    fake_openai.reply_raw(RawAnswer(b'{"choices": [{"message": {"content": "' + b"a" * 65536 for _ in range(128)))

    with pytest.raises(ProviderError) as raised:
        make(fake_openai, max_answer_bytes=1024 * 1024).chat(messages=[user("x")])

    assert type(raised.value) is ProviderError
    assert raised.value.message == "The LLM provider's answer is over the limit of 1048576 bytes."
    assert raised.value.details["limit_bytes"] == 1024 * 1024
    assert fake_openai.bytes_sent < 8 * 1024 * 1024


def test_openai_nul_and_lone_surrogates_in_a_reply_are_dropped_and_replaced(fake_openai):
    fake_openai.reply("a\x00b\ud800c \ud83d\ude00")

    result = make(fake_openai).chat(messages=[user("x")])

    assert result.content == "ab\ufffdc \U0001f600"
    result.content.encode("utf-8")

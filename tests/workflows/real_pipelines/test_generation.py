"""The one layer that caches generation calls: chat answers in ``api_responses``, images in ``images``."""

from __future__ import annotations

import pytest
from django.conf import settings

from memory_app.errors import ProviderError
from memory_app.services.cache import cache_counters_read, cache_get, cache_statistics_flush
from tests.workflows.real_pipelines.test_openai_path import chat_answer
from workflows.pipelines.generation import chat_cached, generation_cached
from workflows.providers.llm import ChatRequest

pytestmark = pytest.mark.django_db


def test_a_chat_answer_is_cached_under_the_key_it_always_had(openai_llm):
    openai_llm.route("/v1/chat/completions", lambda body: chat_answer(" 小明去钓鱼。 "))
    request = ChatRequest(system="Compress the story.", user="小明和老王去河边钓鱼。")

    first, second = chat_cached(request), chat_cached(request)

    assert first == second == " 小明去钓鱼。 "
    assert len(openai_llm.requests) == 1
    # The key written before the cache moved to the pipelines: entries cached then still hit.
    key = {
        "model": "fake-model",
        "base_url": openai_llm.base_url,
        "messages": [
            {"role": "system", "content": "Compress the story."},
            {"role": "user", "content": "小明和老王去河边钓鱼。"},
        ],
    }
    assert cache_get(namespace="api_responses", key=key) == " 小明去钓鱼。 "


def test_an_answer_that_should_be_json_and_is_not_is_never_cached(openai_llm):
    openai_llm.route("/v1/chat/completions", lambda body: chat_answer("<html>busy</html>"))
    request = ChatRequest(system="List the names.", user="小明", json_answer=True)

    for _attempt in range(2):
        with pytest.raises(ProviderError):
            chat_cached(request)

    assert len(openai_llm.requests) == 2
    assert cache_get(namespace="api_responses", key=request.cache_key(settings.MEMORY.providers.llm)) is None


def test_generation_cached_says_whether_the_value_was_generated(media):
    calls: list[int] = []

    def generate() -> bytes:
        calls.append(1)
        return b"\x89PNG panel"

    cache_statistics_flush()
    before = cache_counters_read(namespace="images")
    first = generation_cached(namespace="images", key={"prompt": "河边"}, generate=generate, content_type="image/png")
    second = generation_cached(namespace="images", key={"prompt": "河边"}, generate=generate, content_type="image/png")
    cache_statistics_flush()  # counters are buffered per process
    after = cache_counters_read(namespace="images")

    assert (first.value, first.cached) == (b"\x89PNG panel", False)
    assert (second.value, second.cached) == (b"\x89PNG panel", True)
    assert calls == [1]
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 1)

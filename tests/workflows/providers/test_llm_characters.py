"""Character extraction through an OpenAI-compatible chat model (the local fake server, over real HTTP): the
model is asked for JSON with names and aliases, and its answer is checked by the offline rules."""

from __future__ import annotations

import json

import pytest

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError
from workflows.providers import llm

STORY = (
    "林小雨放学回家，在巷子口东张西望。小雨推开门，奶奶正在择菜。林小雨想起了去年去世的爷爷林国栋。"
    "小雨对奶奶说：“我饿了。”奶奶笑着端出一碗面。林小雨吃得很香。"
)


def answer(server, content) -> None:
    server.reply(json.dumps(content, ensure_ascii=False))


def test_the_model_is_asked_for_a_json_object_of_names_and_aliases(openai_llm):
    answer(openai_llm, {"characters": [{"name": "林小雨", "aliases": ["小雨"], "present": True}]})

    found = llm.characters_find(STORY, ask=llm.chat_answer)

    assert [(item["name"], item["aliases"], item["mentions"]) for item in found] == [("林小雨", ["小雨"], 5)]
    body = openai_llm.requests[-1].body
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0
    assert '"aliases"' in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == STORY


def test_the_answer_is_checked_by_the_offline_rules(openai_llm):
    answer(
        openai_llm,
        {
            "characters": [
                {"name": "小雨", "aliases": ["Rainy"], "present": True},  # a given name: folds into 林小雨
                {"name": "林小雨", "aliases": [], "present": True},
                {"name": "东张西望", "aliases": [], "present": True},  # an idiom
                {"name": "Superman", "aliases": [], "present": True},  # not in the text
                {"name": "奶奶", "aliases": [], "present": True},  # a kinship word, not a name
                {"name": "林国栋", "aliases": ["爷爷"], "present": False},  # remembered, not in the scene
                "not an object",
                {"aliases": ["林小雨"]},
            ]
        },
    )

    found = llm.characters_find(STORY, ask=llm.chat_answer)

    assert [(item["name"], item["aliases"], item["present"]) for item in found] == [
        ("林小雨", ["小雨"], True),
        ("林国栋", [], False),
    ]


def test_a_plain_array_of_names_is_still_understood(openai_llm):
    answer(openai_llm, ["林小雨", "小雨", "Superman"])

    found = llm.characters_find(STORY, ask=llm.chat_answer)

    assert [(item["name"], item["aliases"]) for item in found] == [("林小雨", ["小雨"])]


def test_json_mode_off_sends_no_response_format(openai_llm, settings):
    config = settings.MEMORY.providers.llm.model_copy(update={"json_mode": False})
    answer(openai_llm, {"characters": [{"name": "林小雨", "aliases": [], "present": True}]})

    llm.characters_find(STORY, ask=lambda request: llm.chat_answer(request, config=config))

    assert "response_format" not in openai_llm.requests[-1].body


@pytest.mark.parametrize("content", [{"characters": "林小雨"}, 42, {"people": []}])
def test_an_answer_of_another_shape_is_a_provider_error(openai_llm, content):
    answer(openai_llm, content)

    with pytest.raises(ProviderError, match="character list"):
        llm.characters_find(STORY, ask=llm.chat_answer)


def test_the_cache_key_tells_json_mode_apart():
    request = llm.ChatRequest(system="s", user="u", json_answer=True)
    on = ProviderConfig(provider="openai", model="m")
    off = ProviderConfig(provider="openai", model="m", json_mode=False)

    assert request.cache_key(on) != request.cache_key(off)

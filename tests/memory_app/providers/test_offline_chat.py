"""The offline responder's behaviour: retrieval over the window, where the answer came from, the rules for
greetings and for prompts nothing relates to, Chinese and English, and the length bound."""

from __future__ import annotations

import pytest

from memory_app.providers.llm import (
    FROM_EARLIER,
    FROM_EARLIER_ZH,
    GREETING,
    GREETING_ZH,
    NOTHING_RELEVANT,
    NOTHING_RELEVANT_ZH,
    ChatMessage,
    OfflineLLM,
)
from memory_app.tokens import count_tokens

STORY = [
    ChatMessage(role="system", content="You help write comics."),
    ChatMessage(
        role="user",
        content="The dragon is called Ember. Ember lives in a cave under the mountain. The weather is sunny today.",
    ),
    ChatMessage(role="assistant", content="Noted. The knight carries a silver sword."),
    ChatMessage(role="user", content="My cat Mochi sleeps on the windowsill."),
]


def ask(window: list[ChatMessage], prompt: str, max_tokens: int | None = None) -> str:
    return (
        OfflineLLM().chat(messages=[*window, ChatMessage(role="user", content=prompt)], max_tokens=max_tokens).content
    )


def test_the_reply_holds_the_relevant_sentence_and_not_the_unrelated_ones():
    reply = ask(STORY, "Where does the dragon live?")

    assert reply.startswith(FROM_EARLIER + "\n")
    assert "- You said: Ember lives in a cave under the mountain." not in reply  # shares no word with the prompt
    assert "- You said: The dragon is called Ember." in reply
    for unrelated in ("weather", "silver sword", "Mochi", "You help write comics"):
        assert unrelated not in reply


def test_the_best_match_is_chosen_by_its_words_weight_and_says_who_said_it():
    reply = ask(STORY, "What does the knight carry?")

    assert reply == FROM_EARLIER + "\n- I said: The knight carries a silver sword."


def test_a_rare_shared_word_outweighs_a_common_one():
    window = [
        ChatMessage(role="user", content="Ember is red. Ember is big. Ember flies. Ember roars at the castle."),
    ]

    reply = ask(window, "Who roars at Ember?")

    # "roars" is in one sentence, "ember" in four: the sentence with both ranks first, the others fall under the cutoff.
    assert reply == FROM_EARLIER + "\n- You said: Ember roars at the castle."


def test_chinese_prompts_get_chinese_answers_from_chinese_sentences():
    window = [
        ChatMessage(role="user", content="小红是一名画家。她养了一只叫花花的猫。今天下雨了。"),
        ChatMessage(role="assistant", content="明白。城堡是蓝色的。"),
    ]

    reply = ask(window, "城堡是什么颜色的\uff1f")

    assert reply == FROM_EARLIER_ZH + "\n- 我说过\uff1a城堡是蓝色的。"
    assert "下雨" not in reply and "画家" not in reply


def test_an_empty_context_gets_a_fixed_answer_that_quotes_no_source():
    assert ask([], "What is the dragon called?") == NOTHING_RELEVANT + "What is the dragon called?"
    assert ask([], "龙叫什么名字\uff1f") == NOTHING_RELEVANT_ZH + "龙叫什么名字\uff1f"
    assert OfflineLLM().chat(messages=[]).content == NOTHING_RELEVANT


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Hello!", GREETING),
        ("hi there", GREETING),
        ("Draw a castle.", NOTHING_RELEVANT + "Draw a castle."),
        ("你好", GREETING_ZH),
    ],
)
def test_a_greeting_gets_a_greeting_and_anything_else_a_fixed_answer_when_nothing_relates(prompt, expected):
    assert ask(STORY, prompt) == expected


def test_its_own_earlier_answers_are_never_quoted_back():
    window = [
        ChatMessage(role="user", content="Where is the dragon?"),
        ChatMessage(role="assistant", content=NOTHING_RELEVANT + "Where is the dragon?"),
        ChatMessage(role="user", content="The dragon is called Ember."),
        ChatMessage(role="assistant", content=FROM_EARLIER + "\n- You said: The dragon is called Ember."),
    ]

    reply = ask(window, "What is the dragon called?")

    # The earlier question shares only "dragon": under half the best score, it is left out.
    assert reply == FROM_EARLIER + "\n- You said: The dragon is called Ember."


def test_the_rolling_summary_is_a_source_named_as_such():
    window = [ChatMessage(role="system", content="Summary of earlier conversation: user: The tower is made of glass.")]

    assert ask(window, "What is the tower made of?") == FROM_EARLIER + "\n- Summary: user: The tower is made of glass."


def test_the_same_window_gives_the_same_reply():
    assert ask(STORY, "Tell me about Ember the dragon.") == ask(STORY, "Tell me about Ember the dragon.")


@pytest.mark.parametrize("max_tokens", [1, 5, 12, 20, 40])
def test_the_reply_respects_max_tokens_keeping_whole_lines_when_it_can(max_tokens):
    window = [
        ChatMessage(role="user", content="Ember is a dragon. Ember guards the gold. Ember sleeps all day long."),
    ]
    unbounded = ask(window, "Tell me about Ember.")

    reply = ask(window, "Tell me about Ember.", max_tokens=max_tokens)

    assert count_tokens(reply) <= max_tokens
    assert unbounded.startswith(reply)
    if count_tokens("\n".join(unbounded.splitlines()[:2])) <= max_tokens:
        assert set(reply.splitlines()) <= set(unbounded.splitlines())  # no line cut in the middle

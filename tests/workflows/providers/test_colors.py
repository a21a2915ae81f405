"""Drawing colours from the colour words of a designed character's features."""

from __future__ import annotations

import json

import pytest

from workflows.providers import llm
from workflows.providers.colors import color_from_words, feature_colors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("黑色", "#222222"),
        ("乌黑的长发", "#111111"),
        ("深蓝色校服", "#1F3A5F"),
        ("蓝色校服", "#1B98E0"),
        ("a dark blue jacket", "#1F3A5F"),
        ("Blonde, shoulder length", "#E6C35C"),
        ("红色运动服配白鞋", "#D7263D"),  # the first colour word of the feature
        ("bluebell pattern", None),  # not a whole word
        ("短发", None),
        ("", None),
        (None, None),
    ],
)
def test_the_colour_word_of_a_feature(text, expected):
    assert color_from_words(text) == expected


def test_skin_words_are_their_own_table():
    assert (color_from_words("白皙", skin=True), color_from_words("tanned", skin=True)) == ("#FFDBAC", "#C68642")
    assert color_from_words("fair", skin=False) is None


def test_only_parts_without_a_colour_word_keep_the_fallback():
    fallback = {"hair": "#B22222", "clothing": "#D7263D", "skin": "#F1C27D"}

    colors = feature_colors({"hair_color": "黑色", "clothing_style": "宽松的外套"}, fallback)

    assert colors == {"hair": "#222222", "clothing": "#D7263D", "skin": "#F1C27D"}


def test_a_character_the_llm_designs_is_drawn_in_its_features_colours(openai_llm):
    answer = {
        "appearance_features": {"hair_color": "黑色", "eye_color": "棕色", "clothing_style": "蓝色校服"},
        "personality_traits": ["勇敢"],
    }
    name_skin = llm._pick("林小雨", "skin", llm._SKIN)

    design = llm.design_character("林小雨", passages=["林小雨很勇敢。"], ask=lambda request: json.dumps(answer))

    assert design["appearance_features"]["hair_color"] == "黑色"
    assert design["colors"] == {"hair": "#222222", "clothing": "#1B98E0", "skin": name_skin}


def test_offline_designs_keep_their_table_colours(settings):
    design = llm.design_character("小明", passages=[], ask=lambda request: "")

    assert design["appearance_features"]["clothing_style"] in dict(llm._CLOTHING)
    assert design["colors"]["clothing"] == dict(llm._CLOTHING)[design["appearance_features"]["clothing_style"]]
    assert design["colors"]["hair"] == dict(llm._HAIR)[design["appearance_features"]["hair_color"]]

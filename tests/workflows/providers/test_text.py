"""The offline Chinese text provider: sentences, segments, names, TextRank summaries."""

from __future__ import annotations

import pytest

from workflows.providers import text


def test_sentences_split_on_chinese_punctuation_and_keep_closing_quotes():
    found = text.sentences("王伯说：“你来了？”小明点头。\n\n天黑了！大家回家；各自睡觉")

    assert [sentence.text for sentence in found] == [
        "王伯说：“你来了？”",
        "小明点头。",
        "天黑了！",
        "大家回家；",
        "各自睡觉",
    ]
    assert [sentence.paragraph for sentence in found] == [0, 0, 1, 1, 1]


def test_segments_pack_whole_sentences_up_to_the_target():
    story = "一二三四五。六七八九十。甲乙丙。\n丁戊己庚辛壬癸子丑寅。"

    assert text.segment(story, target_chars=12, max_segments=10) == [
        "一二三四五。六七八九十。",
        "甲乙丙。",
        "丁戊己庚辛壬癸子丑寅。",
    ]
    # A sentence longer than the target is a segment of its own; none is ever cut.
    assert text.segment("这是一句很长很长的句子。短句。", target_chars=5, max_segments=10) == [
        "这是一句很长很长的句子。",
        "短句。",
    ]


def test_segments_grow_to_fit_max_segments():
    story = "一句。" * 30

    segments = text.segment(story, target_chars=3, max_segments=5)

    assert len(segments) <= 5
    assert "".join(segments) == story


def test_summary_reaches_the_ratio_and_keeps_the_names(story):
    # Sentence lengths are 22, 20, 6, 27, 10, 12, 16, 16 (129): the budget at 0.5 is 64.5 characters.
    summary, kept = text.summarize_to_ratio(story, target_ratio=0.5)

    assert kept == [2, 3, 4, 6]
    assert sum(len(sentence.text) for index, sentence in enumerate(text.sentences(story)) if index in kept) == 59
    assert "王伯" not in summary

    # 王伯 would be lost: his best sentence is added even over budget.
    with_names, kept = text.summarize_to_ratio(story, target_ratio=0.5, keep_names=["小明", "老王", "王伯"])

    assert kept == [1, 2, 3, 4, 6]
    assert all(name in with_names for name in ("小明", "老王", "王伯"))


def test_textrank_prefers_the_sentence_that_shares_most():
    scores = text.textrank(["小明和老王去钓鱼。", "小明和老王钓到大鱼。", "天空很蓝。"])

    assert scores[2] < min(scores[0], scores[1])


@pytest.fixture
def story() -> str:
    from tests.workflows.real_pipelines.conftest import STORY

    return STORY

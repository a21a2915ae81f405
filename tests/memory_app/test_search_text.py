"""The index's words: ASCII text takes a shortcut past jieba's dictionary walk that must cut exactly as jieba does."""

from __future__ import annotations

import jieba
import jieba.finalseg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_app import search_text
from memory_app.search_text import _plain_text_shortcut, _plain_words, _tokenizer, index_tokens

ASCII_TEXT = st.text(
    alphabet=st.sampled_from("abcxyzABCXYZ0123456789 ._%-\t\n\r!?,;:'\"()/\\@$^*=~`[]{}<>|"), max_size=80
)
SAMPLES = [
    "",
    " ",
    "A message of a realistic length, about a panel of the comic: the hero opens the door. 12",
    "v1.2.3 costs 3.5% more -- or 12.50% (see e-mail_address@host.example)",
    "line one\r\nline two\n\tindented  double  space",
    "x",
    ".",
    "_init_ __main__ 100% 1.5.x a-b--c",
]


def _jieba(text: str) -> list[str]:
    return list(_tokenizer().cut_for_search(text))


def test_the_shortcut_applies_to_the_installed_dictionary():
    assert _plain_text_shortcut()


def test_the_shortcut_uses_jiebas_own_patterns():
    assert search_text._JIEBA_RUN.pattern == jieba.re_han_default.pattern
    assert search_text._JIEBA_SPACE.pattern == jieba.re_skip_default.pattern
    assert search_text._JIEBA_LATIN.pattern == jieba.finalseg.re_skip.pattern


@pytest.mark.parametrize("text", SAMPLES)
def test_plain_words_are_jiebas_words(text):
    assert _plain_words(text) == _jieba(text)


@settings(max_examples=400, deadline=None)
@given(ASCII_TEXT)
def test_plain_words_are_jiebas_words_for_any_ascii_text(text):
    assert _plain_words(text) == _jieba(text)


@pytest.mark.parametrize("text", ["C++ and C# at AT&T", "林小雨打开了门 v1.2", "café au lait"])
def test_text_the_shortcut_does_not_cover_goes_to_jieba(text, monkeypatch):
    monkeypatch.setattr(search_text, "_plain_words", lambda text: pytest.fail("took the shortcut"))

    assert search_text._cut_for_search(text) == _jieba(text)


def test_index_tokens_of_an_english_message():
    assert index_tokens("The hero opens the door, 3.5% faster!") == "the hero opens the door 3.5% faster"

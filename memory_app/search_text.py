"""Words for the recall index: jieba cuts Chinese (search mode, so a long word is also found by its parts), Latin
words and numbers are kept whole and lower-cased, punctuation and spaces go. The index stores the words joined by
single spaces, then every Chinese character of the text once more on its own: a one-character query (雨) and a
name jieba cuts differently in the query and in the text (林小雨 → 林 小雨) still find it. A query is cut the
same way (without the extra characters), its function words dropped (they would match almost every row).
"""

from __future__ import annotations

import hashlib
import logging
import re
from functools import cache

import jieba

_WORD = re.compile(r"\w", re.UNICODE)
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# Words too common to tell records apart: a query made of them alone finds nothing rather than everything.
_STOPWORDS_TEXT = (
    "的 了 是 在 和 与 及 就 都 也 而 又 把 被 让 给 对 从 到 向 着 过 吗 呢 吧 啊 呀 哦 嗯 么 这 那 这个 那个 "
    "我 你 他 她 它 我们 你们 他们 她们 一个 一 有 没有 不 很 还 会 要 说 去 来 上 下 中 里 之 其 或 但 "
    "谁 什么 哪 哪里 哪儿 怎么 怎样 为什么 多少 几 "
    "a an the and or of to in on at is are was were be it this that what which who how"
)
QUERY_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


# jieba's own patterns (jieba/__init__.py and jieba/finalseg): the runs it segments, the white space between them,
# and how its HMM splits a run without Chinese characters.
_JIEBA_RUN = re.compile("([\u4e00-\u9fd5a-zA-Z0-9+#&\\._%\\-]+)")
_JIEBA_SPACE = re.compile("(\r\n|\\s)")
_JIEBA_LATIN = re.compile("([a-zA-Z0-9]+(?:\\.\\d+)?%?)")
# The only characters of the ASCII words in jieba's dictionary that are not letters or digits (AT&T, C#, C++).
_DICTIONARY_SIGNS = frozenset("#+&")


@cache
def _tokenizer() -> jieba.Tokenizer:
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba.dt


@cache
def _plain_text_shortcut() -> bool:
    """Whether ``_plain_words`` gives what jieba gives for ASCII text without ``#+&``: its dictionary holds no ASCII
    word (with a frequency: a word, not only a prefix) without one of those signs, so nothing in such text is one."""
    return not any(
        frequency and word.isascii() and _DICTIONARY_SIGNS.isdisjoint(word)
        for word, frequency in _tokenizer().FREQ.items()
    )


def _plain_words(text: str) -> list[str]:
    """``cut_for_search`` of ASCII text without ``#+&`` (see ``_plain_text_shortcut``), the way jieba reaches it: a
    run of letters, digits and ``._%-`` is no dictionary word, so its HMM splits it into letter-and-digit words
    (a number keeps its decimals and percent sign) and what lies between them; white space stays whole, any other
    character stands alone. jieba's dictionary walk over each character costs 0.2 ms for a chat message."""
    words: list[str] = []
    for block in _JIEBA_RUN.split(text):
        if not block:
            continue
        if _JIEBA_RUN.match(block):
            words += [block] if len(block) == 1 else [piece for piece in _JIEBA_LATIN.split(block) if piece]
        else:
            for piece in _JIEBA_SPACE.split(block):
                words += [piece] if _JIEBA_SPACE.match(piece) else list(piece)
    return words


def _cut_for_search(text: str) -> list[str]:
    if text.isascii() and _DICTIONARY_SIGNS.isdisjoint(text) and _plain_text_shortcut():
        return _plain_words(text)
    return list(_tokenizer().cut_for_search(text))


def _words(text: str) -> list[str]:
    return [word.lower() for word in _cut_for_search(text) if _WORD.search(word)]


def index_tokens(text: str) -> str:
    """``text`` as the index stores it: its words, lower-cased, then its Chinese characters not already a word of
    their own, each once, all joined by single spaces."""
    words = [word.replace('"', "") for word in _words(text)]
    known = set(words)
    extra = [gram for gram in dict.fromkeys(_han_grams(text)) if gram not in known]
    return " ".join(words + extra)


def _han_grams(text: str) -> list[str]:
    """Every Chinese character of ``text`` and every pair of neighbours within a run of Chinese characters."""
    grams: list[str] = []
    for run in _HAN_RUN.findall(text):
        grams += list(run)
        grams += [run[index : index + 2] for index in range(len(run) - 1)]
    return grams


def query_words(query: str) -> list[str]:
    """The distinct words of a search query, in order, function words dropped (all of them kept when the query
    has nothing else). A longer Chinese word is also looked for by its pairs of characters (the text may have been
    cut differently around it); a character jieba left on its own (林 of 林小雨) is looked for with its neighbours
    (林小), not alone: a single character matches most of the index."""
    cut = [word.replace('"', "") for word in _words(query)]
    pairs = [gram for word in cut if len(word) > 2 for gram in _han_grams(word) if len(gram) == 2]
    for run in _HAN_RUN.findall(query):
        pieces = [word for word in _tokenizer().cut(run) if word]
        start = 0
        for piece in pieces:
            if len(piece) == 1 and len(run) > 1 and piece not in QUERY_STOPWORDS:
                pairs += [run[index : index + 2] for index in (start - 1, start) if 0 <= index < len(run) - 1]
            start += len(piece)
    words = [word for word in dict.fromkeys(cut + pairs) if word]
    meaningful = [word for word in words if word not in QUERY_STOPWORDS]
    if any(len(word) > 1 for word in meaningful):
        meaningful = [word for word in meaningful if len(word) > 1 or not _HAN_RUN.fullmatch(word)]
    return meaningful or words


def text_hash(text: str) -> str:
    """The key of a text's embedding (and of its index row's ``text_hash``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

"""Offline Chinese text analysis: segmentation (jieba), person names, sentence splitting, TextRank summaries.

Person names come from jieba's part-of-speech tagger (``nr``) helped by what names look like in Chinese stories
— a familiar prefix (小X, 老X, 阿X, 大X) or a kinship/title suffix (X伯, X叔, X婶, X姐, X哥 …) — and by
frequency: a name must be mentioned at least ``min_mentions`` times to count, so one-off mis-tags drop out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

from memory_app.providers.llm import content_words

# Paragraphs: blank-line or newline separated. Sentences end at 。！？；… (and ASCII ! ? ;), a closing quote
# that follows such a mark stays with its sentence.
_SENTENCE = re.compile(r"[^。！？；!?;…\n]*(?:[。！？；!?;]+|…+|$)[”」』\"']?")
_NAME_PREFIX = re.compile(r"^(小|老|阿|大)[\u4e00-\u9fff]$")
_NAME_SUFFIX = re.compile(r"^[\u4e00-\u9fff](伯|叔|婶|姨|姐|哥|妹|弟|爷|奶|嫂)$")
_CJK_NAME = re.compile(r"^[\u4e00-\u9fff]{2,4}$")
# Words jieba sometimes tags ``nr`` that are not people in stories.
_NOT_NAMES = frozenset(
    ["小时", "小心", "老师", "大家", "小说", "老人", "大人", "小孩", "阿姨", "老家", "大概", "小声", "大声"]
)


@dataclass(frozen=True)
class Sentence:
    text: str
    paragraph: int
    start: int  # character offset in the original text


def paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n|\n", text) if part.strip()]


def sentences(text: str) -> list[Sentence]:
    """Sentences in order, each with its paragraph index and offset; whitespace-only pieces dropped."""
    found: list[Sentence] = []
    offset = 0
    for index, paragraph in enumerate(paragraphs(text)):
        base = text.find(paragraph, offset)
        offset = base + len(paragraph)
        for match in _SENTENCE.finditer(paragraph):
            piece = match.group(0).strip()
            if piece:
                found.append(Sentence(text=piece, paragraph=index, start=base + match.start()))
    return found


def quiet_jieba() -> None:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)


def analyze(text: str) -> dict[str, object]:
    """Sizes and the most frequent content words (jieba)."""
    words = content_words(text)
    return {
        "char_count": len(text),
        "paragraph_count": len(paragraphs(text)),
        "sentence_count": len(sentences(text)),
        "word_count": len(words),
        "top_words": [word for word, _ in Counter(words).most_common(10)],
        "language": "chinese" if re.search(r"[\u4e00-\u9fff]", text) else "other",
    }


class FoundName(TypedDict):
    name: str
    mentions: int
    first_position: int  # offset of the first mention in the text


def extract_names(text: str, *, min_mentions: int = 2, limit: int = 12) -> list[FoundName]:
    """Person names with their mention count and first offset, most mentioned first (ties: first seen)."""
    import jieba.posseg

    quiet_jieba()
    counts: Counter[str] = Counter()
    for token in jieba.posseg.cut(text):
        word = token.word.strip()
        if not _CJK_NAME.fullmatch(word) or word in _NOT_NAMES:
            continue
        if token.flag == "nr" or _NAME_PREFIX.fullmatch(word) or _NAME_SUFFIX.fullmatch(word):
            counts[word] += 1
    names: list[FoundName] = [
        {"name": name, "mentions": count, "first_position": text.find(name)}
        for name, count in counts.items()
        if count >= min_mentions
    ]
    # A name inside a longer found name (王 in 老王) is not a second person.
    names = [n for n in names if not any(n["name"] != o["name"] and n["name"] in o["name"] for o in names)]
    names.sort(key=lambda n: (-n["mentions"], n["first_position"]))
    return names[:limit]


def textrank(items: list[str], *, damping: float = 0.85, iterations: int = 50) -> list[float]:
    """TextRank scores (Mihalcea & Tarau 2004): sentence similarity = shared words / (log|a| + log|b|)."""
    words = [set(content_words(item)) for item in items]
    count = len(items)
    weights = [[0.0] * count for _ in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            shared = len(words[i] & words[j])
            if shared and len(words[i]) > 1 and len(words[j]) > 1:
                weight = shared / (math.log(len(words[i])) + math.log(len(words[j])))
                weights[i][j] = weights[j][i] = weight
    totals = [sum(row) for row in weights]
    scores = [1.0] * count
    for _ in range(iterations):
        scores = [
            (1 - damping) + damping * sum(weights[j][i] / totals[j] * scores[j] for j in range(count) if weights[j][i])
            for i in range(count)
        ]
    return scores


def summarize_to_ratio(text: str, *, target_ratio: float, keep_names: list[str] | None = None) -> tuple[str, list[int]]:
    """An extractive summary of about ``target_ratio`` of the text's length: the best TextRank sentences that
    fit the budget, plus — even over budget — the best sentence of each name in ``keep_names`` that would
    otherwise be lost. Sentences stay in story order, paragraphs kept. Returns (summary, kept indexes)."""
    found = sentences(text)
    if not found:
        return "", []
    scores = textrank([sentence.text for sentence in found])
    budget = target_ratio * sum(len(sentence.text) for sentence in found)
    chosen: set[int] = set()
    used = 0
    for index in sorted(range(len(found)), key=lambda i: (-scores[i], i)):
        size = len(found[index].text)
        if used + size <= budget:
            chosen.add(index)
            used += size
    for name in keep_names or []:
        if any(name in found[index].text for index in chosen):
            continue
        with_name = [i for i in range(len(found)) if name in found[i].text]
        if with_name:
            chosen.add(max(with_name, key=lambda i: (scores[i], -i)))
    kept = sorted(chosen)
    lines: list[str] = []
    last_paragraph = None
    for index in kept:
        sentence = found[index]
        if sentence.paragraph != last_paragraph and lines:
            lines.append("\n")
        lines.append(sentence.text)
        last_paragraph = sentence.paragraph
    return "".join(lines), kept


def segment(text: str, *, target_chars: int, max_segments: int) -> list[str]:
    """Panels' texts: whole sentences packed up to ``target_chars``, never across a paragraph unless the
    paragraph piece is short; a sentence longer than the target is a segment of its own. Beyond
    ``max_segments`` the target grows so the whole story still fits."""
    found = sentences(text)
    total = sum(len(sentence.text) for sentence in found)
    target = max(target_chars, math.ceil(total / max_segments)) if found else target_chars
    while True:
        segments = _pack(found, target)
        if len(segments) <= max_segments:
            return segments
        target = math.ceil(target * 1.2)


def _pack(found: list[Sentence], target: int) -> list[str]:
    segments: list[str] = []
    current: list[Sentence] = []
    for sentence in found:
        size = sum(len(item.text) for item in current)
        new_paragraph = bool(current) and sentence.paragraph != current[-1].paragraph
        if current and (size + len(sentence.text) > target or (new_paragraph and size >= target / 2)):
            segments.append("".join(item.text for item in current))
            current = []
        current.append(sentence)
    if current:
        segments.append("".join(item.text for item in current))
    return segments

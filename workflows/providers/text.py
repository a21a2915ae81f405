"""Offline Chinese text analysis: segmentation (jieba), sentence splitting, TextRank summaries.

The story's characters (full names, aliases, who is present) are found by ``workflows.providers.names``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from memory_app.providers.llm import content_words

# Paragraphs: blank-line or newline separated. Sentences end at 。！？；… (and ASCII ! ? ;), a closing quote
# that follows such a mark stays with its sentence.
_SENTENCE = re.compile(r"[^。！？；!?;…\n]*(?:[。！？；!?;]+|…+|$)[”」』\"']?")


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


def places_in(text: str) -> list[str]:
    """The place names of ``text`` (jieba's ``ns`` tag, two characters or more), in order of first mention."""
    import jieba.posseg

    quiet_jieba()
    return list(dict.fromkeys(pair.word for pair in jieba.posseg.cut(text) if pair.flag == "ns" and len(pair.word) > 1))


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

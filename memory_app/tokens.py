"""Token counting for conversation budgets: a CJK-aware estimate by default, exact with a tokenizer file.

The estimate (no model files needed): every CJK character (Han ideographs, kana, Hangul, CJK and full-width
punctuation) counts as one token, because BPE vocabularies of Chinese-capable models encode most of them as one;
all other non-whitespace characters count as one token per four, rounded up, the usual rule of thumb for
English-like text. ``tokens = cjk_chars + ceil(other_non_space_chars / 4)``, and any non-empty text is at least 1.

When ``conversation.tokenizer_file`` names a Hugging Face ``tokenizer.json``, the ``tokenizers`` library loads it
once per process and the count is exact: the length of its encoding without special tokens.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Protocol

from django.conf import settings

_CJK = re.compile(
    "["
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Katakana extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff00-\uffef"  # half-width and full-width forms
    "\U00020000-\U0002fa1f"  # CJK extensions B-F, compatibility supplement
    "]"
)
_WHITESPACE = re.compile(r"\s")


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


def estimate_tokens(text: str) -> int:
    """The documented CJK-aware estimate (see the module docstring)."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    other = len(text) - cjk - len(_WHITESPACE.findall(text))
    return max(1, cjk + math.ceil(other / 4))


@lru_cache(maxsize=4)
def _tokenizer_counter(path: str) -> TokenCounter:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def token_counter() -> TokenCounter:
    """The counter the configuration asks for. A tokenizer file that cannot be loaded raises at first use."""
    path = settings.MEMORY.conversation.tokenizer_file
    if path:
        return _tokenizer_counter(path)
    return estimate_tokens


def count_tokens(text: str) -> int:
    return token_counter()(text)


def token_counters_release() -> int:
    """Drop the tokenizers this process loaded (the memory optimizer's release); returns how many were held."""
    held = _tokenizer_counter.cache_info().currsize
    _tokenizer_counter.cache_clear()
    return held

"""Text that UTF-8 and the database can hold.

Python strings can hold what UTF-8 cannot encode: a lone UTF-16 surrogate (U+D800-U+DFFF), which a JSON text may
escape ("\\ud800") and ``json.loads`` turns into one character. A surrogate *pair* escaped in JSON becomes one
ordinary character, so any character in that range in a ``str`` is a lone one. PostgreSQL stores no U+0000.
"""

from __future__ import annotations

import re
from typing import Any

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def text_storable(text: str) -> str:
    """``text`` without NUL characters, each lone surrogate replaced by U+FFFD: what a provider's answer becomes
    before it is stored (the rest of the answer is worth keeping)."""
    return LONE_SURROGATE.sub(REPLACEMENT, text.replace("\x00", ""))


def surrogates_replaced(value: Any) -> Any:
    """A copy of a JSON-like ``value`` whose strings and keys have each lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {surrogates_replaced(key): surrogates_replaced(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [surrogates_replaced(item) for item in value]
    return value

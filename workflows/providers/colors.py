"""Drawing colours from the colour words of a character's features ("黑色长发", "blue school uniform").

A designed character says its hair is 黑色 and its clothes 蓝色校服: the panels must draw exactly that, not the
colours a hash of the name would pick. ``color_from_words`` finds the colour word of a feature (the longest, so
深蓝 wins over 蓝, "dark blue" over "blue"; the first in the text when several are as long) and returns its hex.
A feature without a colour word gives ``None``: the caller keeps its name-derived colour for that part only.
"""

from __future__ import annotations

import re

# Chinese colour words (with or without 色) and English ones; more specific shades before the plain colour.
COLOR_WORDS: dict[str, str] = {
    # black, white, grey, silver
    "乌黑": "#111111",
    "漆黑": "#111111",
    "黑": "#222222",
    "雪白": "#F8F8F8",
    "白": "#F2F2F2",
    "银白": "#D8D8E0",
    "银": "#C0C0C8",
    "灰白": "#BBBBBB",
    "花白": "#BBBBBB",
    "深灰": "#4A4A4A",
    "浅灰": "#B0B0B0",
    "灰": "#808080",
    # browns and blond
    "金黄": "#E6B422",
    "金": "#E6C35C",
    "亚麻": "#D9C08C",
    "栗": "#8B4513",
    "深棕": "#4E3020",
    "浅棕": "#A0785A",
    "棕": "#6B4423",
    "褐": "#6B4423",
    "咖啡": "#6F4E37",
    "米": "#EADBC8",
    "卡其": "#C3B091",
    # reds, pinks, oranges, yellows
    "深红": "#8B0000",
    "酒红": "#7B1E3A",
    "大红": "#D7263D",
    "红": "#D7263D",
    "粉红": "#F4A6C0",
    "粉": "#F4A6C0",
    "橙": "#F28C28",
    "橘": "#F28C28",
    "鹅黄": "#FFF143",
    "黄": "#F4D35E",
    # greens, blues, purples
    "墨绿": "#1E4D2B",
    "深绿": "#1E5631",
    "浅绿": "#90D26D",
    "绿": "#2E933C",
    "青": "#2A9D8F",
    "藏青": "#1F2A44",
    "深蓝": "#1F3A5F",
    "天蓝": "#6EC6FF",
    "浅蓝": "#9CC9F5",
    "蓝": "#1B98E0",
    "紫": "#7B2CBF",
    # English
    "jet black": "#111111",
    "black": "#222222",
    "white": "#F2F2F2",
    "silver": "#C0C0C8",
    "platinum": "#E5E4E2",
    "grey": "#808080",
    "gray": "#808080",
    "blonde": "#E6C35C",
    "blond": "#E6C35C",
    "golden": "#E6B422",
    "gold": "#E6B422",
    "auburn": "#A52A2A",
    "chestnut": "#8B4513",
    "dark brown": "#4E3020",
    "light brown": "#A0785A",
    "brown": "#6B4423",
    "beige": "#EADBC8",
    "khaki": "#C3B091",
    "ginger": "#B06500",
    "dark red": "#8B0000",
    "crimson": "#B22222",
    "scarlet": "#D7263D",
    "red": "#D7263D",
    "pink": "#F4A6C0",
    "orange": "#F28C28",
    "yellow": "#F4D35E",
    "dark green": "#1E5631",
    "green": "#2E933C",
    "teal": "#2A9D8F",
    "navy": "#1F2A44",
    "dark blue": "#1F3A5F",
    "light blue": "#9CC9F5",
    "sky blue": "#6EC6FF",
    "blue": "#1B98E0",
    "purple": "#7B2CBF",
    "violet": "#7B2CBF",
}
# Skin is described with other words: fair, pale, tanned, dark; 白皙, 小麦色, 黝黑.
SKIN_WORDS: dict[str, str] = {
    "白皙": "#FFDBAC",
    "白净": "#FFDBAC",
    "小麦": "#C68642",
    "黝黑": "#8D5524",
    "古铜": "#A0522D",
    "fair": "#FFDBAC",
    "pale": "#FFE4C4",
    "tanned": "#C68642",
    "tan": "#C68642",
    "olive": "#C8A165",
    "dark": "#8D5524",
}

_ENGLISH = re.compile(r"[a-z]")


def _pattern(words: dict[str, str]) -> re.Pattern[str]:
    # Longest first, so the alternation prefers 深蓝 to 蓝 at the same place; English words whole words only.
    ordered = sorted(words, key=len, reverse=True)
    parts = [rf"\b{re.escape(word)}\b" if _ENGLISH.match(word) else re.escape(word) for word in ordered]
    return re.compile("|".join(parts), re.IGNORECASE)


_COLOR_PATTERN = _pattern(COLOR_WORDS)
_SKIN_PATTERN = _pattern(SKIN_WORDS)


def color_from_words(text: object, *, skin: bool = False) -> str | None:
    """The hex colour of the first colour word of ``text`` (a feature's value), or ``None`` if it has none."""
    if not isinstance(text, str) or not text:
        return None
    words = SKIN_WORDS if skin else COLOR_WORDS
    match = (_SKIN_PATTERN if skin else _COLOR_PATTERN).search(text)
    if match is None:
        return None
    found = match.group(0)
    return words.get(found) or words[found.lower()]


def feature_colors(appearance: dict[str, object], fallback: dict[str, str]) -> dict[str, str]:
    """The drawing colours (hair, clothing, skin) that the appearance features name, ``fallback``'s (the
    name-derived colours) for each part no feature gives a colour word for."""
    found = {
        "hair": color_from_words(appearance.get("hair_color")),
        "clothing": color_from_words(appearance.get("clothing_style")) or color_from_words(appearance.get("clothing")),
        "skin": color_from_words(appearance.get("skin_tone"), skin=True)
        or color_from_words(appearance.get("skin_color"), skin=True),
    }
    return {part: found.get(part) or color for part, color in fallback.items()}

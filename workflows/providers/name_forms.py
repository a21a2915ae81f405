"""What Chinese names look like: the surnames and the stop list (data files read at import), forms of address,
full names and the forms a given name is used in, and whether a word can name a person at all.

Used by ``workflows.providers.names``, which finds a story's characters.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data")


def read_words(file_name: str) -> frozenset[str]:
    """One word a line; ``#`` starts a comment."""
    lines = (DATA / file_name).read_text(encoding="utf-8").splitlines()
    return frozenset(word for line in lines if (word := line.split("#", 1)[0].strip()))


SURNAMES = read_words("surnames.txt")
COMPOUND_SURNAMES = frozenset(surname for surname in SURNAMES if len(surname) > 1)
NOT_NAMES = read_words("not_names.txt")

# Forms of address by kind: forms of one surname and one kind may be one person; of two kinds, two people.
_SUFFIX_KINDS: dict[str, str] = {
    **dict.fromkeys(["伯", "叔", "爷", "伯伯", "叔叔", "爷爷", "大爷", "大伯", "大叔", "老汉", "老头"], "elder man"),
    **dict.fromkeys(["婶", "姨", "奶", "奶奶", "婶婶", "大妈", "大娘", "大婶", "阿姨", "婆婆"], "elder woman"),
    **dict.fromkeys(["哥", "大哥"], "brother"),
    **dict.fromkeys(["姐", "大姐", "嫂", "大嫂", "妹"], "sister"),
    **dict.fromkeys(["师傅", "老师", "医生", "大夫", "队长", "老板", "经理", "校长", "主任", "警官"], "title"),
}
PREFIX_KINDS = {"老": "elder man", "小": "young"}
_SUFFIXES = sorted(_SUFFIX_KINDS, key=len, reverse=True)
HAN = re.compile(r"^[\u4e00-\u9fff]+$")
_IDIOM_FLAGS = ("i", "l")


@cache
def dictionary_flag(word: str) -> str | None:
    import jieba.posseg

    flag: str | None = jieba.posseg.dt.word_tag_tab.get(word)
    return flag


def is_idiom(word: str, flag: str) -> bool:
    """An idiom or set phrase by the dictionary's tag, or a four-character dictionary word that is not a
    compound-surname name (the dictionary tags many idioms ``nr``)."""
    known_flag = dictionary_flag(word)
    if flag in _IDIOM_FLAGS or known_flag in _IDIOM_FLAGS:
        return True
    return known_flag is not None and len(word) == 4 and not _four_character_name(word)


def _four_character_name(word: str) -> bool:
    return word[:2] in COMPOUND_SURNAMES or address_kind(word) is not None


def address_kind(word: str) -> tuple[str, str] | None:
    """``(surname, kind)`` when ``word`` is a form of address (老周, 小周, 周伯, 马师傅); ``None`` otherwise.
    阿X is a given-name form, not a surname one: it has no kind here."""
    if len(word) == 2 and word[0] in PREFIX_KINDS and word[1] in SURNAMES:
        return word[1], PREFIX_KINDS[word[0]]
    for suffix in _SUFFIXES:
        surname = word[: -len(suffix)]
        if word.endswith(suffix) and surname in SURNAMES and len(surname) == 1:
            return surname, _SUFFIX_KINDS[suffix]
    return None


def split_full_name(word: str) -> tuple[str, str] | None:
    """``(surname, given name)`` when ``word`` is a surname followed by a one- or two-character given name and
    is not a form of address."""
    if word.startswith("阿") or any(address_kind(word[:size]) for size in range(2, len(word) + 1)):
        return None
    for size in (2, 1):
        surname, given = word[:size], word[size:]
        if surname in SURNAMES and len(surname) == size and 1 <= len(given) <= 2:
            return surname, given
    return None


def given_name_forms(full_name: str) -> set[str]:
    """The forms a given name is used in alone: 林小雨 → 小雨; 孙悦 → 悦悦, 阿悦, 小悦; 刘建明 → 建明, 阿明…"""
    split = split_full_name(full_name)
    if split is None:
        return set()
    given = split[1]
    last = given[-1]
    forms = {f"阿{last}", f"小{last}", last * 2}
    if len(given) == 2:
        forms.add(given)
    return {form for form in forms if form != full_name and form not in NOT_NAMES}


def plausible_name(word: str) -> bool:
    """Could ``word`` name a person at all: Han characters, 2 to 4 long, not a stop word, not an idiom."""
    if not (2 <= len(word) <= 4 and HAN.fullmatch(word)) or word in NOT_NAMES:
        return False
    if is_idiom(word, ""):
        return False
    if len(word) == 4:
        return _four_character_name(word)
    if len(word) == 3:
        return split_full_name(word) is not None or address_kind(word) is not None
    return True

"""Offline character extraction for Chinese stories: full names, forms of address, aliases folded into one
character, idioms and common words kept out, and who is really in a scene.

The rules (docs/workflows.md, "Character extraction", says the same for readers):

* **Candidates.** A word jieba tags as a person (``nr``, ``nrfg``, ``nrt``) of 2 to 4 Han characters; a surname
  token followed by a one- or two-character given name (jieba often splits 林小雨 into 林 + 小雨: the two are
  joined when the pair recurs, or when the given name recurs alone and the tagger took either part for a
  person); a form of address: 老周 / 小周 (老 or 小 + surname), 周伯 / 周婶 / 马师傅 / 何大姐 (surname + a kinship
  word or title), 阿明 (阿 + one character). The surnames are data (``data/surnames.txt``, read by ``name_forms``).
* **Never characters.** Words of ``data/not_names.txt`` (everyday words and idioms the dictionary tags as
  names); any word jieba's dictionary tags as an idiom or set phrase (``i``, ``l``); a four-character
  dictionary word that does not start with a compound surname (四字 idioms such as 东张西望); a three-character
  word that does not start with a surname and is not a form of address. Spans of such words are masked before
  names are counted, so no name is found inside an idiom (张西 in 东张西望).
* **Mentions.** Counted left to right, longest candidate first, starting at a word boundary (a two-character
  candidate must also end at one), so 小雨 inside 林小雨 is a mention of 林小雨 only.
* **Aliases.** (1) A given name used alone, or its 阿X / 小X / XX forms (小雨, 阿明, 悦悦), joins the one full
  name it belongs to. (2) Forms of address of one surname join each other when they are of one kind (老周 and
  周伯 are both an elder man's; 杨婶 and 杨叔 are two people, as are 老王 and his son 小王). (3) 老X / 小X join
  the surname's full name when the text mentions exactly one and no form of another kind; a kinship form
  (吴奶奶) never joins a full name by its surname alone. (4) An explicit link joins the name just after
  「人称」, 「外号」, 「绰号」, 「也就是」, 「(都)叫他/她」, 「管他叫」 to a name before it in the same sentence: one of
  the same surname if there is one, else for 叫他 / 管她叫 the sentence's subject (its first name), else the name
  just before, whatever the surnames. (5) Two names in one sentence of narration are two people: rules 2 and 3
  never join them. The character's ``name`` is its most mentioned full name (a surname and a given name), or its most
  mentioned form when it has none; ties go to the first seen.
* **Present or only mentioned.** A character needs ``min_mentions`` mentions in all. A mention *acts* unless
  it is inside quoted speech (and not the addressee at the start of the quote: “小明, …”) or follows, in its
  sentence, a word of remembering, hearsay or absence (想起, 听说, 去世, 照片, 电话 …). A character is
  ``present`` (drawn) when at least half its mentions act; otherwise it is only mentioned and never drawn.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from workflows.providers.name_forms import (
    HAN,
    NOT_NAMES,
    PREFIX_KINDS,
    SURNAMES,
    address_kind,
    dictionary_flag,
    given_name_forms,
    is_idiom,
    plausible_name,
    read_words,
    split_full_name,
)

_PERSON_FLAGS = ("nr", "nrfg", "nrt")
# Parts of speech that never begin a given name after a surname (particles, prepositions, pronouns, verbs,
# adjectives …).
_FUNCTION_FLAGS = frozenset(["u", "uj", "ul", "uz", "uv", "ud", "ug", "p", "c", "r", "d", "x", "m", "q", "y", "e"])
_NOT_GIVEN_FLAGS = _FUNCTION_FLAGS | {"zg", "f", "v", "vd", "vn", "vg", "vi", "vq", "a", "ad", "an", "ag"}
_NUMERALS = frozenset("一二三四五六七八九十百千万亿两几零半")
_QUOTES = re.compile(r"“[^”]*”|「[^」]*」|『[^』]*』|\"[^\"]*\"")
# Words of remembering, hearsay or absence: a name after one in its sentence is not in the scene.
_CUES = read_words("mention_cues.txt")
_LINK = re.compile(
    r"(?:人称|外号叫?|绰号叫?|也就是|管(?:他|她)叫|(?:都|常|总)?(?:叫|喊|称)(?:他|她)(?:作|为|做)?)[“「\"]?"
)
_SENTENCE_END = re.compile(r"[。！？!?；;\n]")


class FoundName(TypedDict):
    """One character: its ``name``, the other names it goes by, its mentions and first offset, and whether it
    is in a scene (``present``) or only talked about."""

    name: str
    aliases: list[str]
    mentions: int
    first_position: int
    present: bool


@dataclass
class _Token:
    word: str
    flag: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.word)


@dataclass
class _Mention:
    form: str
    start: int
    acting: bool


@dataclass
class _Text:
    """A text cut into words once: boundaries, masked (idiom) positions, quotes, sentence ends."""

    text: str
    tokens: list[_Token]
    boundaries: set[int] = field(default_factory=set)
    masked: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, text: str) -> _Text:
        tokens = _tokens(text)
        read = cls(text=text, tokens=tokens)
        for token in tokens:
            read.boundaries.update((token.start, token.end))
            if len(token.word) > 1 and (token.word in NOT_NAMES or is_idiom(token.word, token.flag)):
                read.masked.update(range(token.start, token.end))
            elif token.flag in _PERSON_FLAGS and dictionary_flag(token.word) is None:
                # The tagger's guesses at names (words it has no entry for) often take in a neighbour (杨婶一,
                # 欧阳明 + 轩): inside them any position may be where a name starts or ends.
                read.boundaries.update(range(token.start, token.end))
        return read


def _tokens(text: str) -> list[_Token]:
    import jieba.posseg

    from workflows.providers.text import quiet_jieba

    quiet_jieba()
    tokens: list[_Token] = []
    offset = 0
    for pair in jieba.posseg.cut(text):
        tokens.append(_Token(word=pair.word, flag=pair.flag, start=offset))
        offset += len(pair.word)
    return tokens


def _candidates(read: _Text) -> set[str]:
    found: set[str] = set()
    tokens = read.tokens
    for index, token in enumerate(tokens):
        word = token.word
        following = tokens[index + 1 : index + 3]
        if token.flag in _PERSON_FLAGS:
            found |= _person_token_names(word, following[0] if following else None)
        if word in SURNAMES and following:
            # A surname and the word after it are a full name when the pair recurs (a name is repeated; 连 +
            # 呼吸 by chance is not), or when the given name recurs alone and the tagger took one of the two for
            # a person (林 + 小雨 … 小雨: the full name once, then the given name).
            for given in _given_after(following):
                if not plausible_name(word + given):
                    continue
                named = token.flag in _PERSON_FLAGS or any(
                    item.word == given and item.flag in _PERSON_FLAGS for item in tokens
                )
                if read.text.count(word + given) >= 2 or (named and read.text.count(given) >= 2):
                    found.add(word + given)
        if word == "阿" and following and len(following[0].word) == 1 and HAN.fullmatch(following[0].word):
            found.add(word + following[0].word)
    text = read.text
    for index in range(len(text) - 1):
        if index not in read.boundaries or index in read.masked:
            continue
        for size in (4, 3, 2):
            word = text[index : index + size]
            fits = len(word) == size and index + size in read.boundaries
            if fits and address_kind(word) is not None and plausible_name(word):
                found.add(word)
                break
    for match in _LINK.finditer(text):
        # The name a link gives (人称张铁手) is a name whatever the tagger made of it.
        target = next((item for item in tokens if item.start == match.end()), None)
        if target is not None and target.flag in (*_PERSON_FLAGS, "nz") and plausible_name(target.word):
            found.add(target.word)
    for full_name in list(found):
        found |= {form for form in given_name_forms(full_name) if form in text}
    return _stable_given_names(found, text)


def _person_token_names(word: str, following: _Token | None) -> set[str]:
    """Names from one token the tagger took for a person: the token itself, joined with a following person
    token (欧阳明 + 轩), or, when the tagger took in a neighbour (杨婶一), its longest prefix that is a name."""
    found: set[str] = set()
    if following is not None and following.flag in _PERSON_FLAGS and plausible_name(word + following.word):
        found.add(word + following.word)
    if plausible_name(word):
        found.add(word)
        return found
    if dictionary_flag(word) is not None:
        return found
    prefix = next(
        (
            word[:size]
            for size in range(len(word) - 1, 1, -1)
            if plausible_name(word[:size]) and (split_full_name(word[:size]) or address_kind(word[:size]))
        ),
        None,
    )
    if prefix is not None:
        found.add(prefix)
    return found


def _given_after(following: Sequence[_Token]) -> list[str]:
    """Given names that may follow a surname token: the next word if it has one or two Han characters and can
    begin a name, or two single characters in a row (林 + 小 + 雨)."""
    first = following[0]
    if not _can_begin_given_name(first):
        return []
    if len(first.word) == 2:
        return [first.word]
    if len(first.word) != 1:
        return []
    second = following[1] if len(following) > 1 else None
    if second is not None and len(second.word) == 1 and _can_begin_given_name(second):
        return [first.word, first.word + second.word]
    return [first.word]


def _can_begin_given_name(token: _Token) -> bool:
    if not HAN.fullmatch(token.word) or token.word in NOT_NAMES:
        return False
    if token.flag == "m":
        # 多多 is tagged a numeral word; 一个, 三天 are numerals.
        return not any(character in _NUMERALS for character in token.word)
    return token.flag not in _NOT_GIVEN_FLAGS


def _stable_given_names(found: set[str], text: str) -> set[str]:
    """Of two full names where one extends the other by a character (欧阳明, 欧阳明轩), keep the longer only when
    it occurs every time the shorter does: a given name is the same at every mention, the word after it is not."""
    kept = set(found)
    for name in found:
        for longer in found:
            if longer != name and longer.startswith(name) and len(longer) == len(name) + 1:
                if split_full_name(name) and text.count(longer) == text.count(name):
                    kept.discard(name)
                else:
                    kept.discard(longer)
    return kept


def _quote_spans(text: str) -> list[tuple[int, int]]:
    return [(match.start(), match.end()) for match in _QUOTES.finditer(text)]


def _acting(text: str, start: int, form: str, quotes: list[tuple[int, int]]) -> bool:
    for quote_start, quote_end in quotes:
        if quote_start < start < quote_end:
            after = text[start + len(form) : start + len(form) + 1]
            # “小明, …”: the one addressed is in the scene.
            return start == quote_start + 1 and after in ("，", ",", "！", "!", "？", "?")
    sentence_start = max((match.end() for match in _SENTENCE_END.finditer(text, 0, start)), default=0)
    before = text[sentence_start:start]
    return not any(cue in before for cue in _CUES)


def _mentions(read: _Text, forms: Iterable[str]) -> list[_Mention]:
    """Mentions of ``forms`` left to right, longest first, never inside a masked word."""
    by_length = sorted(set(forms), key=len, reverse=True)
    text, quotes = read.text, _quote_spans(read.text)
    found: list[_Mention] = []
    index = 0
    while index < len(text):
        match = None
        if index not in read.masked and (index in read.boundaries or not read.boundaries):
            for form in by_length:
                end = index + len(form)
                if text.startswith(form, index) and (len(form) > 2 or end in read.boundaries):
                    match = form
                    break
        if match is None:
            index += 1
            continue
        found.append(_Mention(form=match, start=index, acting=_acting(text, index, match, quotes)))
        index += len(match)
    return found


class _Groups:
    """Names put together into characters. Two names said in one sentence are two people (王伯是老王的侄子;
    老周对周伯说): groups holding such a pair are never joined, except by an explicit link (``force``)."""

    def __init__(self, names: Iterable[str], apart: set[frozenset[str]] | None = None) -> None:
        self.group = {name: frozenset([name]) for name in names}
        self.apart = apart or set()

    def join(self, first: str, second: str, *, force: bool = False) -> None:
        merged = self.group[first] | self.group[second]
        if not force and any(frozenset((a, b)) in self.apart for a in self.group[first] for b in self.group[second]):
            return
        for name in merged:
            self.group[name] = merged

    def members(self) -> list[list[str]]:
        return [sorted(group) for group in set(self.group.values())]


def _said_together(read: _Text, mentions: list[_Mention]) -> set[frozenset[str]]:
    """Pairs of names mentioned in one sentence of narration (quoted speech calls and talks about people in
    ways that tell nothing about who is who: “老高, …” said to 高明)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(read.text)]
    quotes = _quote_spans(read.text)
    by_sentence: dict[int, set[str]] = {}
    for mention in mentions:
        if any(start < mention.start < end for start, end in quotes):
            continue
        sentence = next((index for index, end in enumerate(ends) if mention.start < end), len(ends))
        by_sentence.setdefault(sentence, set()).add(mention.form)
    return {frozenset((a, b)) for forms in by_sentence.values() for a in forms for b in forms if a != b}


def _fold_given_names(groups: _Groups, names: set[str]) -> None:
    full_names = [name for name in names if split_full_name(name) is not None]
    for name in names:
        owners = [full for full in full_names if name in given_name_forms(full)]
        if len(owners) == 1:
            # A given name beside its full name in one sentence is still the same person (林小雨放下书包，小雨笑了).
            groups.join(name, owners[0], force=True)


def _fold_forms_of_address(groups: _Groups, names: set[str], counts: Counter[str]) -> None:
    """Forms of one surname and one kind are one person (老周, 周伯). 老X / 小X, how peers call someone by the
    surname, join the surname's full name when the text mentions exactly one and no form of another kind; a
    kinship form (吴奶奶, 周伯, 杨婶) never joins a full name by its surname alone: families share a surname
    (吴奶奶 and her grandson 吴涛), so only an explicit link ties them. A form that could join two characters
    joins the more mentioned (王爷爷: 老王 rather than 王伯, his nephew, whom the text names beside him)."""
    mentioned = set(counts)
    by_surname: dict[str, dict[str, list[str]]] = {}
    for name in sorted(names & mentioned, key=lambda name: (-counts[name], name)):
        kind = address_kind(name)
        if kind is not None:
            by_surname.setdefault(kind[0], {}).setdefault(kind[1], []).append(name)
    for surname, kinds in by_surname.items():
        for forms in kinds.values():
            for index, form in enumerate(forms[1:], start=1):
                for other in forms[:index]:
                    groups.join(form, other)
                    if other in groups.group[form]:
                        break
        full_names = [name for name in mentioned if (split_full_name(name) or ("",))[0] == surname]
        peer_forms = [form for forms in kinds.values() for form in forms if form[0] in PREFIX_KINDS]
        if len(full_names) == 1 and len(kinds) == 1 and peer_forms:
            groups.join(peer_forms[0], full_names[0])


def _fold_links(groups: _Groups, read: _Text, names: set[str], mentions: list[_Mention]) -> set[str]:
    """Join names tied by 人称 / 也就是 / 叫他 …; returns the names so linked (they need no second mention)."""
    linked: set[str] = set()
    by_length = sorted(names, key=len, reverse=True)
    for match in _LINK.finditer(read.text):
        after = next((name for name in by_length if read.text.startswith(name, match.end())), None)
        sentence_start = max((end.end() for end in _SENTENCE_END.finditer(read.text, 0, match.start())), default=0)
        before = [m.form for m in mentions if sentence_start <= m.start < match.start()]
        target = _link_target(after, before, pronoun="他" in match.group() or "她" in match.group())
        if after and target and target != after:
            groups.join(after, target, force=True)
            linked.add(after)
    return linked


def _surname(form: str) -> str | None:
    address = address_kind(form)
    if address is not None:
        return address[0]
    full = split_full_name(form)
    return full[0] if full is not None else None


def _link_target(after: str | None, before: list[str], *, pronoun: bool) -> str | None:
    """Which earlier name of the sentence a link ties ``after`` to: one of the same surname when there is one
    (周伯是林小雨家楼下的师傅 / 大家都叫他老周: 老周 is 周伯); else, for 叫他 / 管她叫, the sentence's subject, its
    first name (the pronoun's referent in narration); else the name just before (镇上的铁匠张强 / 人称张铁手)."""
    if after is None or not before:
        return None
    surname = _surname(after)
    same = [form for form in before if surname is not None and _surname(form) == surname and form != after]
    if same:
        return same[-1]
    return before[0] if pronoun else before[-1]


def _canonical(members: list[str], counts: dict[str, int], first: dict[str, int]) -> str:
    full = [name for name in members if split_full_name(name) is not None and name not in _derived(members)]
    pool = full or members
    return min(pool, key=lambda name: (-counts[name], first[name]))


def _derived(members: list[str]) -> set[str]:
    return {form for name in members for form in given_name_forms(name)}


def _characters(
    read: _Text, groups: _Groups, names: set[str], mentions: list[_Mention], linked: set[str], min_mentions: int
) -> list[FoundName]:
    counts = dict.fromkeys(names, 0)
    first = {name: len(read.text) for name in names}
    acting = dict.fromkeys(names, 0)
    for mention in mentions:
        counts[mention.form] += 1
        first[mention.form] = min(first[mention.form], mention.start)
        acting[mention.form] += mention.acting
    found: list[FoundName] = []
    for members in groups.members():
        members = [name for name in members if counts[name]]
        total = sum(counts[name] for name in members)
        if not members or (total < min_mentions and not linked & set(members)):
            continue
        name = _canonical(members, counts, first)
        aliases = sorted((alias for alias in members if alias != name), key=lambda alias: first[alias])
        found.append(
            {
                "name": name,
                "aliases": aliases,
                "mentions": total,
                "first_position": min(first[member] for member in members),
                "present": 2 * sum(acting[member] for member in members) >= total,
            }
        )
    found.sort(key=lambda item: (-item["mentions"], item["first_position"]))
    return found


def extract_names(text: str, *, min_mentions: int = 2, limit: int = 12) -> list[FoundName]:
    """The story's characters, most mentioned first (ties: first seen); see the module docstring for the rules.
    Characters only mentioned are listed with ``present`` false."""
    read = _Text.of(text)
    names = _candidates(read)
    mentions = _mentions(read, names)
    groups = _Groups(names, _said_together(read, mentions))
    _fold_given_names(groups, names)
    _fold_forms_of_address(groups, names, Counter(mention.form for mention in mentions))
    linked = _fold_links(groups, read, names, mentions)
    return _characters(read, groups, names, mentions, linked, min_mentions)[:limit]


def characters_checked(text: str, proposed: Sequence[tuple[str, Sequence[str], bool]]) -> list[FoundName]:
    """Characters another source (an LLM) proposed as ``(name, aliases, present)``, checked by the same rules:
    every name and alias must occur in the text and be plausible (no idiom, no stop word); entries that share a
    name, or whose name is a given-name form of another's full name, become one; mentions are counted here."""
    read = _Text.of(text)
    entries = []
    for name, aliases, present in proposed:
        forms = [form for form in [name, *aliases] if form in text and plausible_name(form)]
        if forms:
            entries.append((list(dict.fromkeys(forms)), present))
    names = {form for forms, _present in entries for form in forms}
    mentions = _mentions(read, names)
    groups = _Groups(names, _said_together(read, mentions))
    for forms, _present in entries:
        for form in forms[1:]:
            groups.join(form, forms[0], force=True)
    _fold_given_names(groups, names)
    counted = _characters(read, groups, names, mentions, linked=names, min_mentions=1)
    # The model's word on who is in a scene wins over the offline reading of the text.
    present_by_form = {form: present for forms, present in entries for form in forms}
    for item in counted:
        item["present"] = any(present_by_form.get(form, True) for form in [item["name"], *item["aliases"]])
    return counted


def present_in(passage: str, forms: dict[str, list[str]]) -> list[str]:
    """The characters acting in ``passage`` (named by any of their forms, outside quoted speech or as the one
    addressed, not only remembered), in order of their first acting mention."""
    read = _Text.of(passage)
    owner = {form: name for name, names in forms.items() for form in names}
    first: dict[str, int] = {}
    for mention in _mentions(read, owner):
        if mention.acting:
            first.setdefault(owner[mention.form], mention.start)
    return sorted(first, key=first.__getitem__)

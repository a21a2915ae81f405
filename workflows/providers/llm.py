"""The pipelines' text work, offline or through the configured OpenAI-compatible chat API.

Built on ``memory_app.providers.llm`` (one client, one set of error rules: ``RetryableProviderError`` for
timeouts, connection errors, 429 and 5xx). ``settings.MEMORY.providers.llm.provider`` chooses:
``offline`` → jieba and TextRank (``workflows.providers.text``), no network; ``openai`` → the chat model,
asked for JSON where a structure is needed.

Every chat goes through the ``ask`` the caller passes (``Ask``: a ``ChatRequest`` in, the answer out): the
pipelines pass ``workflows.pipelines.generation.chat_cached``, which caches answers in the ``api_responses``
namespace by model and messages (``ChatRequest.cache_key``), so re-running the same text does not pay twice. This
module calls the model (``chat_answer``) but caches nothing and imports no service.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError
from memory_app.providers.llm import ChatMessage, llm_provider, split_sentences
from memory_app.providers.openai_client import answer_excerpt
from workflows.providers import names as offline_names
from workflows.providers import text as offline
from workflows.providers.colors import feature_colors

NARRATOR = "旁白"
_QUOTE = re.compile(r"[“「\"]([^”」\"]+)[”」\"]")
# A quote with the clause that introduces it ("王伯笑着说：“…”"): both leave the caption, since the balloon shows who
# speaks; a caption "王伯笑着说：小明点点头。" would say the narration is what he said.
_INTRODUCED_QUOTE = re.compile(
    r"[^。！？!?；;，,“”「」\"\n]{0,20}(?:说|道|问|喊|叫|答|嚷)[：:，,]?\s*[“「\"][^”」\"]+[”」\"]"
)
_TRAIT_WORDS = [
    "勇敢",
    "善良",
    "好奇",
    "调皮",
    "和蔼",
    "严厉",
    "聪明",
    "温柔",
    "倔强",
    "开朗",
    "沉默",
    "慈祥",
    "固执",
    "热心",
    "胆小",
    "认真",
    "爽朗",
    "细心",
    "顽皮",
    "憨厚",
]
_HAIR = [("黑色", "#222222"), ("棕色", "#6B4423"), ("深蓝色", "#1F3A5F"), ("栗色", "#8B4513"), ("红色", "#B22222")]
_CLOTHING = [
    ("红色运动服", "#D7263D"),
    ("蓝色校服", "#1B98E0"),
    ("绿色外套", "#2E933C"),
    ("黄色衬衫", "#F4D35E"),
    ("紫色长衫", "#7B2CBF"),
    ("灰色中山装", "#6C757D"),
]
_SKIN = ["#F1C27D", "#E0AC69", "#FFDBAC", "#C68642"]
_ELDER = re.compile(r"^(老.|.伯|.爷|.奶|.婶)$")


def provider_name() -> str:
    return settings.MEMORY.providers.llm.provider


@dataclass(frozen=True)
class ChatRequest:
    """One chat call: a system and a user message, answered at temperature 0; a ``json_answer`` must parse."""

    system: str
    user: str
    json_answer: bool = False

    @property
    def messages(self) -> list[ChatMessage]:
        return [ChatMessage(role="system", content=self.system), ChatMessage(role="user", content=self.user)]

    def cache_key(self, config: ProviderConfig) -> dict[str, Any]:
        key = {"model": config.model, "base_url": config.base_url, "messages": [m.__dict__ for m in self.messages]}
        if self.json_answer and config.json_mode:
            key["response_format"] = "json_object"
        return key


# How a provider function has the model answer a ``ChatRequest``: the caller's choice (cached or not).
Ask = Callable[[ChatRequest], str]


def chat_answer(request: ChatRequest, *, config: ProviderConfig | None = None) -> str:
    """The model's answer to ``request``. A ``json_answer`` request is parsed before it is returned, so an
    answer that is not JSON raises here, inside the computation, and a cache around this call never stores it:
    the next run (or a retry) asks again instead of meeting the same answer in the cache."""
    config = config or settings.MEMORY.providers.llm
    answer = (
        llm_provider(config).chat(messages=request.messages, temperature=0, json_object=request.json_answer).content
    )
    if request.json_answer:
        _parse_json(answer)
    return answer


def _chat_json(ask: Ask, system: str, user: str) -> Any:
    """One chat call whose answer must be JSON (code fences tolerated)."""
    return _parse_json(ask(ChatRequest(system=system, user=user, json_answer=True)))


def _parse_json(answer: str) -> Any:
    cleaned = re.sub(r"^```(?:json)?\s*|\s*```$", "", answer.strip())
    try:
        return json.loads(cleaned)
    except (ValueError, RecursionError):
        excerpt = answer_excerpt(answer)
        # The excerpt is in the message too: a failed run keeps the message as its error.
        raise ProviderError(
            f"The LLM did not answer with JSON: {excerpt!r}", details={"provider": "openai", "answer": excerpt}
        ) from None


def _chat_text(ask: Ask, system: str, user: str) -> str:
    return ask(ChatRequest(system=system, user=user)).strip()


_CHARACTERS_PROMPT = (
    "Find the characters (people) of the story. Answer with a JSON object: "
    '{"characters": [{"name": str, "aliases": [str], "present": bool}]}. "name" is the fullest name the text '
    'gives (surname and given name when it has both), written exactly as in the text; "aliases" are the other '
    "ways the text names the same person (a given name alone, a nickname, 老X / X伯 forms), each exactly as "
    'written; "present" is false for someone only talked about, remembered or absent. No idioms, no common '
    "nouns, no one the text does not name."
)


def characters_find(text: str, *, ask: Ask) -> list[offline_names.FoundName]:
    """The story's characters, most mentioned first: ``[{name, aliases, mentions, first_position, present}]``.

    Offline by the rules of ``workflows.providers.names``; with a chat model configured, by the model's JSON
    answer checked by the same rules (names and aliases must occur in the text, no idiom or stop word, a given
    name folds into its full name), so a model cannot add a name the text does not have."""
    if provider_name() != "openai":
        return offline_names.extract_names(text)
    answer = _chat_json(ask, _CHARACTERS_PROMPT, text)
    entries = answer.get("characters") if isinstance(answer, dict) else answer
    if not isinstance(entries, list):
        raise ProviderError(
            "The LLM's character list is not a JSON object with a characters array.", details={"provider": "openai"}
        )
    proposed: list[tuple[str, list[str], bool]] = []
    for entry in entries:
        if isinstance(entry, str):
            proposed.append((entry, [], True))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            aliases = entry.get("aliases")
            listed = [alias for alias in aliases if isinstance(alias, str)] if isinstance(aliases, list) else []
            present = entry.get("present")
            proposed.append((entry["name"], listed, present if isinstance(present, bool) else True))
    return offline_names.characters_checked(text, proposed)


def compress(
    text: str, *, target_ratio: float, keep_names: list[str], ask: Ask, recalled: list[str] | None = None
) -> str:
    """``text`` compressed to about ``target_ratio`` of its length, keeping ``keep_names``. ``recalled``: lines of
    earlier chapters the model is told of, for continuity (the offline summary is extractive: the names to keep
    are how recall reaches it)."""
    if provider_name() != "openai":
        return offline.summarize_to_ratio(text, target_ratio=target_ratio, keep_names=keep_names)[0]
    target_chars = max(1, round(len(text) * target_ratio))
    return _chat_text(
        ask,
        f"Compress the story to about {target_chars} characters in its own language. Keep every one of these "
        f"names: {', '.join(keep_names) or 'none'}. Answer with the compressed story only."
        + _recalled_prompt(recalled),
        text,
    )


def _recalled_prompt(recalled: list[str] | None) -> str:
    if not recalled:
        return ""
    lines = "\n".join(f"- {line}" for line in recalled)
    return f"\n\nEarlier in this series (recalled, for continuity; do not retell it):\n{lines}"


def script_for(
    segment: str,
    *,
    names: list[str],
    ask: Ask,
    aliases: dict[str, list[str]] | None = None,
    recalled: list[str] | None = None,
) -> dict[str, Any]:
    """One panel's script: ``{scene, characters, dialogue: [{speaker, text}], caption}``. ``characters`` are the
    ones present in the panel, by their names (an alias the passage uses counts as its character). ``recalled``:
    lines of earlier chapters the model keeps consistent with (the pipeline keeps them as continuity notes)."""
    forms = {name: [name, *(aliases or {}).get(name, [])] for name in names}
    canonical = {form: name for name, known in forms.items() for form in known}
    if provider_name() == "openai":
        answer = _chat_json(
            ask,
            'Write a comic panel script for this passage. Answer with JSON: {"scene": str, "characters": '
            '[names present], "dialogue": [{"speaker": name, "text": line}], "caption": str}. List in '
            '"characters" only the people who are in the scene, not those only talked about. Known '
            f"characters: {', '.join(_with_aliases(forms)) or 'none'}.{_recalled_prompt(recalled)}",
            segment,
        )
        if not isinstance(answer, dict):
            raise ProviderError("The LLM's script is not a JSON object.", details={"provider": "openai"})
        listed = [name for name in answer.get("characters", []) if isinstance(name, str)]
        present = list(dict.fromkeys(canonical.get(name, name) for name in listed))
        dialogue = [
            {
                "speaker": canonical.get(str(line.get("speaker") or NARRATOR), str(line.get("speaker") or NARRATOR)),
                "text": str(line.get("text") or ""),
            }
            for line in answer.get("dialogue", [])
            if isinstance(line, dict) and line.get("text")
        ]
        return {
            "scene": str(answer.get("scene") or segment[:40]),
            "characters": present,
            "dialogue": dialogue,
            "caption": str(answer.get("caption") or ""),
        }
    return offline_script(segment, names=names, aliases=aliases)


def _with_aliases(forms: dict[str, list[str]]) -> list[str]:
    return [f"{name} ({', '.join(known[1:])})" if len(known) > 1 else name for name, known in forms.items()]


def offline_script(segment: str, *, names: list[str], aliases: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Characters present = the known characters acting in the passage, by name or alias, in order of appearance
    (someone only talked about in a quote, or remembered, is not drawn: ``names.present_in``); each quoted line
    is said by the last character named before it in the passage (the narrator if none); the caption is the
    narration."""
    forms = {name: [name, *(aliases or {}).get(name, [])] for name in names}
    present = offline_names.present_in(segment, forms)
    dialogue = []
    for match in _QUOTE.finditer(segment):
        before = segment[: match.start()]
        speakers = [(before.rfind(form), name) for name, known in forms.items() for form in known if form in before]
        # "王伯笑着说：“小明，…”": the speaker is the last name before the quote, outside any earlier quote.
        speaker = max(speakers)[1] if speakers else NARRATOR
        dialogue.append({"speaker": speaker, "text": match.group(1)})
    narration = _QUOTE.sub("", _INTRODUCED_QUOTE.sub("", segment)).strip("：:，, ")
    first = offline.sentences(narration)
    scene = first[0].text if first else segment[:40]
    return {"scene": scene[:60], "characters": present, "dialogue": dialogue, "caption": narration[:80]}


def _pick(name: str, salt: str, options: list[Any]) -> Any:
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return options[digest[0] % len(options)]


def design_character(
    name: str,
    *,
    passages: list[str],
    ask: Ask,
    aliases: list[str] | None = None,
    recalled: list[str] | None = None,
) -> dict[str, Any]:
    """Appearance, traits, the features that must stay the same, and the drawing colours.

    Offline, appearance is derived from the name (stable across runs and machines) and age cues of the name or
    an alias (老王, 王伯 are drawn grey-haired); traits are the trait words found in the passages that mention
    the character by any of its names, then in the ``recalled`` lines of earlier chapters that do. With a chat
    model, its features replace those. Either way the drawing colours follow the colour words of the features
    (``workflows.providers.colors``), the name-derived ones filling in only for a part no feature gives a colour.
    """
    forms = [name, *(aliases or [])]
    elder = any(_ELDER.fullmatch(form) for form in forms)
    hair_name, hair_hex = ("灰白色", "#BBBBBB") if elder else _pick(name, "hair", _HAIR)
    clothing_name, clothing_hex = _pick(name, "clothing", _CLOTHING)
    appearance = {
        "hair_color": hair_name,
        "eye_color": _pick(name, "eyes", ["棕色", "黑色", "深棕色"]),
        "height": "165cm" if elder else _pick(name, "height", ["150cm", "160cm", "170cm", "178cm"]),
        "clothing_style": clothing_name,
        "age_group": "elder" if elder else ("child" if name.startswith("小") else "adult"),
    }
    mentioned = "".join(passage for passage in passages if any(form in passage for form in forms))
    # Of the earlier chapters, only the sentences that name the character: "勇敢的小明。他遇见了善良的小红。"
    # makes 小红 kind, not brave.
    earlier = "".join(
        sentence
        for line in recalled or []
        for sentence in split_sentences(line)
        if any(form in sentence for form in forms)
    )
    traits = [word for word in _TRAIT_WORDS if word in mentioned]
    traits = [*traits, *(word for word in _TRAIT_WORDS if word in earlier and word not in traits)][:4]
    if provider_name() == "openai":
        answer = _chat_json(
            ask,
            'Describe the comic character for consistent drawing. Answer with JSON: {"appearance_features": '
            '{"hair_color", "eye_color", "height", "clothing_style"}, "personality_traits": [str]}.',
            f"{' / '.join(forms)}\n\n" + "\n".join(passages)[:4000] + _recalled_prompt(recalled),
        )
        if isinstance(answer, dict):
            described = answer.get("appearance_features")
            if isinstance(described, dict):
                appearance.update({key: str(value) for key, value in described.items() if value})
            traits = [str(trait) for trait in answer.get("personality_traits", []) if trait][:6] or traits
    colors = {"hair": hair_hex, "clothing": clothing_hex, "skin": _pick(name, "skin", _SKIN)}
    if provider_name() == "openai":
        # The model's features' colour words decide the drawing colours (its "黑色" hair is drawn black); the
        # name-derived colours only fill in what no feature names. (Offline, features and colours come from one
        # table already.)
        colors = feature_colors(appearance, colors)
    return {
        "name": name,
        "aliases": list(aliases or []),
        "appearance_features": appearance,
        "consistent_features": sorted(["hair_color", "eye_color", "clothing_style"]),
        "personality_traits": traits,
        "colors": colors,
    }

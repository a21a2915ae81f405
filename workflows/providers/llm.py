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
from memory_app.providers.llm import ChatMessage, llm_provider
from workflows.providers import text as offline

NARRATOR = "旁白"
_QUOTE = re.compile(r"[“「\"]([^”」\"]+)[”」\"]")
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
        return {"model": config.model, "base_url": config.base_url, "messages": [m.__dict__ for m in self.messages]}


# How a provider function has the model answer a ``ChatRequest``: the caller's choice (cached or not).
Ask = Callable[[ChatRequest], str]


def chat_answer(request: ChatRequest, *, config: ProviderConfig | None = None) -> str:
    """The model's answer to ``request``. A ``json_answer`` request is parsed before it is returned, so an
    answer that is not JSON raises here, inside the computation, and a cache around this call never stores it:
    the next run (or a retry) asks again instead of meeting the same answer in the cache."""
    config = config or settings.MEMORY.providers.llm
    answer = llm_provider(config).chat(messages=request.messages, temperature=0).content
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
        raise ProviderError(
            "The LLM did not answer with JSON.", details={"provider": "openai", "answer": answer[:300]}
        ) from None


def _chat_text(ask: Ask, system: str, user: str) -> str:
    return ask(ChatRequest(system=system, user=user)).strip()


def characters_find(text: str, *, ask: Ask) -> list[offline.FoundName]:
    """Named characters, most mentioned first: ``[{name, mentions, first_position}]``."""
    if provider_name() != "openai":
        return offline.extract_names(text)
    answer = _chat_json(
        ask, "List the named characters of the story. Answer with a JSON array of their names only.", text
    )
    if not isinstance(answer, list):
        raise ProviderError("The LLM's character list is not a JSON array.", details={"provider": "openai"})
    # Only names that really occur in the text: a model may invent or translate.
    names = [str(name) for name in answer if isinstance(name, str) and name and name in text]
    found: list[offline.FoundName] = [
        {"name": name, "mentions": text.count(name), "first_position": text.find(name)} for name in names
    ]
    return sorted(found, key=lambda item: (-item["mentions"], item["first_position"]))


def compress(text: str, *, target_ratio: float, keep_names: list[str], ask: Ask) -> str:
    if provider_name() != "openai":
        return offline.summarize_to_ratio(text, target_ratio=target_ratio, keep_names=keep_names)[0]
    target_chars = max(1, round(len(text) * target_ratio))
    return _chat_text(
        ask,
        f"Compress the story to about {target_chars} characters in its own language. Keep every one of these "
        f"names: {', '.join(keep_names) or 'none'}. Answer with the compressed story only.",
        text,
    )


def script_for(segment: str, *, names: list[str], ask: Ask) -> dict[str, Any]:
    """One panel's script: ``{scene, characters, dialogue: [{speaker, text}], caption}``."""
    if provider_name() == "openai":
        answer = _chat_json(
            ask,
            'Write a comic panel script for this passage. Answer with JSON: {"scene": str, "characters": '
            '[names present], "dialogue": [{"speaker": name, "text": line}], "caption": str}. Known '
            f"characters: {', '.join(names) or 'none'}.",
            segment,
        )
        if not isinstance(answer, dict):
            raise ProviderError("The LLM's script is not a JSON object.", details={"provider": "openai"})
        present = [name for name in answer.get("characters", []) if isinstance(name, str)]
        dialogue = [
            {"speaker": str(line.get("speaker") or NARRATOR), "text": str(line.get("text") or "")}
            for line in answer.get("dialogue", [])
            if isinstance(line, dict) and line.get("text")
        ]
        return {
            "scene": str(answer.get("scene") or segment[:40]),
            "characters": present,
            "dialogue": dialogue,
            "caption": str(answer.get("caption") or ""),
        }
    return offline_script(segment, names=names)


def offline_script(segment: str, *, names: list[str]) -> dict[str, Any]:
    """Characters present = known names in the passage (in order of appearance); each quoted line is said by
    the last name before it in the passage (the narrator if none); the caption is the narration."""
    present = sorted((name for name in names if name in segment), key=segment.find)
    dialogue = []
    for match in _QUOTE.finditer(segment):
        before = segment[: match.start()]
        speakers = [(before.rfind(name), name) for name in names if name in before]
        # "王伯笑着说：“小明，…”": the speaker is the last name before the quote, outside any earlier quote.
        speaker = max(speakers)[1] if speakers else NARRATOR
        dialogue.append({"speaker": speaker, "text": match.group(1)})
    narration = _QUOTE.sub("", segment).strip("：:，, ")
    first = offline.sentences(narration)
    scene = first[0].text if first else segment[:40]
    return {"scene": scene[:60], "characters": present, "dialogue": dialogue, "caption": narration[:80]}


def _pick(name: str, salt: str, options: list[Any]) -> Any:
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return options[digest[0] % len(options)]


def design_character(name: str, *, passages: list[str], ask: Ask) -> dict[str, Any]:
    """Appearance, traits, the features that must stay the same, and the drawing colours.

    Offline, appearance is derived from the name (stable across runs and machines) and age cues (老王, 王伯
    are drawn grey-haired); traits are the trait words found in the passages that mention the character.
    """
    elder = bool(_ELDER.fullmatch(name))
    hair_name, hair_hex = ("灰白色", "#BBBBBB") if elder else _pick(name, "hair", _HAIR)
    clothing_name, clothing_hex = _pick(name, "clothing", _CLOTHING)
    appearance = {
        "hair_color": hair_name,
        "eye_color": _pick(name, "eyes", ["棕色", "黑色", "深棕色"]),
        "height": "165cm" if elder else _pick(name, "height", ["150cm", "160cm", "170cm", "178cm"]),
        "clothing_style": clothing_name,
        "age_group": "elder" if elder else ("child" if name.startswith("小") else "adult"),
    }
    mentioned = "".join(passage for passage in passages if name in passage)
    traits = [word for word in _TRAIT_WORDS if word in mentioned][:4]
    if provider_name() == "openai":
        answer = _chat_json(
            ask,
            'Describe the comic character for consistent drawing. Answer with JSON: {"appearance_features": '
            '{"hair_color", "eye_color", "height", "clothing_style"}, "personality_traits": [str]}.',
            f"{name}\n\n" + "\n".join(passages)[:4000],
        )
        if isinstance(answer, dict):
            described = answer.get("appearance_features")
            if isinstance(described, dict):
                appearance.update({key: str(value) for key, value in described.items() if value})
            traits = [str(trait) for trait in answer.get("personality_traits", []) if trait][:6] or traits
    return {
        "name": name,
        "appearance_features": appearance,
        "consistent_features": sorted(["hair_color", "eye_color", "clothing_style"]),
        "personality_traits": traits,
        "colors": {"hair": hair_hex, "clothing": clothing_hex, "skin": _pick(name, "skin", _SKIN)},
    }

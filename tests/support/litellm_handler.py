"""A custom model for LiteLLM's proxy (``custom_provider_map`` in the proxy's config), loaded BY THE PROXY in its
own virtualenv: it imports litellm, never our code.

It answers the pipelines' prompts as a scripted model would (by what the system message asks), the rolling summary
and plain chat; ``comicmem/refuse`` refuses every call with HTTP 401 and a message that echoes an API key, as some
upstreams do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError

# Not sk-… (the proxy masks those itself): our own redaction must catch it. tests/support/litellm_proxy.py
# holds the same value for the tests (this module runs in the proxy, the tests cannot import it).
ECHOED_KEY = "upstream-echo-7f3a9c2e5b1d"
# The characters of tests/workflows/real_pipelines/conftest.py's STORY.
STORY_CHARACTERS = [
    {"name": "小明", "aliases": [], "present": True},
    {"name": "老王", "aliases": ["王伯"], "present": True},
]


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else getattr(message, "content", "")
    return content if isinstance(content, str) else ""


def _named(entry: dict[str, Any], text: str) -> bool:
    return any(form in text for form in [entry["name"], *entry["aliases"]])


def answer(messages: list[Any]) -> str:
    system = _text(messages[0]) if messages else ""
    user = _text(messages[-1]) if messages else ""
    if system.startswith("Find the characters"):
        present = [entry for entry in STORY_CHARACTERS if _named(entry, user)]
        return json.dumps({"characters": present}, ensure_ascii=False)
    if system.startswith("Write a comic panel script"):
        names = [entry["name"] for entry in STORY_CHARACTERS if _named(entry, user)]
        quotes = re.findall(r"“([^”]+)”", user)
        dialogue = [{"speaker": names[0] if names else "旁白", "text": line} for line in quotes[:2]]
        scene = re.split(r"[\u3002\uff01\uff1f]", user)[0][:30]
        return json.dumps(
            {"scene": scene, "characters": names, "dialogue": dialogue, "caption": scene}, ensure_ascii=False
        )
    if system.startswith("Describe the comic character"):
        features = {"hair_color": "黑色", "eye_color": "棕色", "height": "160cm", "clothing_style": "蓝色校服"}
        return json.dumps({"appearance_features": features, "personality_traits": ["勇敢"]}, ensure_ascii=False)
    if system.startswith("Compress the story"):
        return user[: max(1, len(user) // 3)]
    if system.startswith("Summarise the conversation"):
        return "代理摘要: " + " / ".join(line.split(": ", 1)[-1][:20] for line in user.splitlines()[-3:])
    return f"代理回答: {user}"


class ComicModel(CustomLLM):
    def _respond(self, model: str, messages: list[Any]) -> litellm.ModelResponse:
        if "refuse" in model:
            raise CustomLLMError(
                status_code=401, message=f"Incorrect API key provided. Authorization: Bearer {ECHOED_KEY}"
            )
        return litellm.completion(model="gpt-4o-mini", messages=messages, mock_response=answer(messages))

    def completion(self, *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        return self._respond(kwargs.get("model", ""), kwargs.get("messages", []))

    async def acompletion(self, *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        return self._respond(kwargs.get("model", ""), kwargs.get("messages", []))


handler = ComicModel()

"""The provider settings, checked at start-up (a Django system check) and by ``diagnose``.

An OpenAI-compatible provider needs a model and a base URL. The base URL is the API root WITH its version
(``https://api.openai.com/v1``, ``http://127.0.0.1:4000/v1``, Ark's ``…/api/v3``): the client appends
``/chat/completions``, ``/images/generations``, ``/embeddings`` to it. An unset base URL is an error, never a silent
fallback to the public OpenAI endpoint (the client library's default): a key meant for a local server must not go
to a third party because a variable was missing. A base URL without a version segment is a warning (some servers
serve at the root).

Errors stop ``manage.py check``, ``runserver``, ``migrate`` and the web and worker start-up (``check`` runs first
there); warnings are printed and do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from comicmem_site.memory_config import EmbeddingsConfig, MemoryConfig, ProviderConfig

_VERSION_SEGMENT = re.compile(r"/v\d+(?:beta\d*|alpha\d*)?/?$")


@dataclass(frozen=True)
class SettingsProblem:
    level: Literal["error", "warning"]
    setting: str  # the dotted setting, e.g. providers.llm.base_url
    message: str


def _url_problems(setting: str, variable: str, base_url: str) -> list[SettingsProblem]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            SettingsProblem("error", setting, f"{setting} ({variable}) {base_url!r} is not an http(s) URL with a host.")
        ]
    if not _VERSION_SEGMENT.search(parts.path):
        return [
            SettingsProblem(
                "warning",
                setting,
                f"{setting} ({variable}) {base_url!r} does not end with a version segment such as /v1: the base URL "
                "is the API root including its version (https://api.openai.com/v1, http://127.0.0.1:4000/v1).",
            )
        ]
    return []


def _provider_problems(kind: str, prefix: str, config: ProviderConfig) -> list[SettingsProblem]:
    if config.provider != "openai":
        return []
    problems = []
    if not config.model:
        problems.append(
            SettingsProblem(
                "error",
                f"providers.{kind}.model",
                f"{prefix}_PROVIDER=openai needs a model: set providers.{kind}.model ({prefix}_MODEL).",
            )
        )
    if not config.base_url:
        problems.append(
            SettingsProblem(
                "error",
                f"providers.{kind}.base_url",
                f"{prefix}_PROVIDER=openai needs a base URL: set providers.{kind}.base_url ({prefix}_BASE_URL) to "
                "the API root including /v1 (for OpenAI itself: https://api.openai.com/v1). Unset does not mean "
                "the public OpenAI endpoint.",
            )
        )
    else:
        problems += _url_problems(f"providers.{kind}.base_url", f"{prefix}_BASE_URL", config.base_url)
    return problems


def _embeddings_problems(config: EmbeddingsConfig) -> list[SettingsProblem]:
    if not config.base_url:
        if config.model:
            return [
                SettingsProblem(
                    "warning",
                    "search.embeddings.base_url",
                    "search.embeddings.model is set but search.embeddings.base_url (EMBEDDINGS_BASE_URL) is not: "
                    "no embeddings are computed, recall is lexical only.",
                )
            ]
        return []
    problems = _url_problems("search.embeddings.base_url", "EMBEDDINGS_BASE_URL", config.base_url)
    if not config.model:
        problems.append(
            SettingsProblem(
                "error",
                "search.embeddings.model",
                "search.embeddings.base_url is set, so search.embeddings.model (EMBEDDINGS_MODEL) is needed too.",
            )
        )
    return problems


def provider_settings_problems(config: MemoryConfig) -> list[SettingsProblem]:
    """What is wrong or doubtful in the chat, image and embeddings endpoints' settings (empty: nothing)."""
    return [
        *_provider_problems("llm", "LLM", config.providers.llm),
        *_provider_problems("image", "IMAGE", config.providers.image),
        *_embeddings_problems(config.search.embeddings),
    ]

"""Redaction of sensitive values before they reach history, workflow state, logs or exports.

A key is sensitive when, lower-cased and snake_cased (``apiKey`` → ``api_key``, ``X-Api-Key`` → ``x_api_key``),
it equals one of the names or ends with ``_<name>``: ``access_token`` and ``user_token`` are redacted,
``max_tokens`` and ``token_count`` are not. This holds at any depth, inside lists too. The names below cover API
keys and tokens, bearer credentials and the headers that carry them, passwords, session ids and cookies;
``memory.history.redact_extra_fields`` adds more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"
SENSITIVE_NAMES: frozenset[str] = frozenset(
    {
        # Keys and tokens (``access_token``, ``X-CSRF-Token``, ``refresh_token`` end with ``_token``).
        "api_key",
        "apikey",
        "token",
        "user_token",
        "csrftoken",
        "bearer",
        "jwt",
        "secret",
        "secret_key",
        "private_key",
        "access_key",
        # Credentials and the headers that carry them (``Proxy-Authorization`` ends with ``_authorization``).
        "authorization",
        "credential",
        "credentials",
        "password",
        "passwd",
        "passphrase",
        # Sessions and cookies (``Set-Cookie``, ``session_cookie`` end with ``_cookie``).
        "cookie",
        "session_id",
        "sessionid",
        "session_key",
        "jsessionid",
        "phpsessid",
        # Personal data.
        "personal_info",
    }
)
MAX_DEPTH = 32
MAX_ITEMS = 1000

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalise_key(key: str) -> str:
    return _CAMEL.sub("_", key).replace("-", "_").replace(" ", "_").lower()


def is_sensitive(key: Any, names: frozenset[str] = SENSITIVE_NAMES) -> bool:
    if not isinstance(key, str):
        return False
    return _is_sensitive_key(key, names)


@lru_cache(maxsize=4096)
def _is_sensitive_key(key: str, names: frozenset[str]) -> bool:
    # Remembered: the same few keys come back in every record and every item of a workflow's data.
    normalised = normalise_key(key)
    return normalised in names or any(normalised.endswith(f"_{name}") for name in names)


def redact(
    value: Any,
    *,
    extra_names: Iterable[str] = (),
    max_chars: int | None = None,
    _depth: int = 0,
    _names: frozenset[str] | None = None,
) -> Any:
    """A copy of ``value`` with sensitive keys' values replaced and oversized strings and lists cut with a marker."""
    names = _names if _names is not None else SENSITIVE_NAMES | {normalise_key(name) for name in extra_names}
    if _depth > MAX_DEPTH:
        return "[TRUNCATED: nested too deeply]"
    if isinstance(value, dict):
        return {
            str(key): REDACTED
            if is_sensitive(key, names)
            else redact(item, max_chars=max_chars, _depth=_depth + 1, _names=names)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [redact(item, max_chars=max_chars, _depth=_depth + 1, _names=names) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"[TRUNCATED: {len(value) - MAX_ITEMS} more items]")
        return items
    if isinstance(value, str) and max_chars is not None and len(value) > max_chars:
        return f"{value[:max_chars]}…[TRUNCATED: {len(value) - max_chars} more chars]"
    return value


# Secrets as they appear inside free text (an upstream error message that echoes the key it was sent): bearer
# credentials, ``sk-…``-style keys, and ``name=value`` / ``name: value`` pairs whose name is sensitive.
_TEXT_SECRETS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_*-]{6,}"),
    re.compile(
        r"(?i)([\"']?\b(?:[\w-]*[_-])?(?:api[_-]?key|apikey|token|secret|password|passwd|authorization|credentials?)"
        r"(?![\w-])[\"']?\s*[:=]\s*)([\"']?)(?!(?:bearer|basic)\s|\[REDACTED\])[^\s\"',;}]{4,}"
    ),
)


def redact_text(text: str, *, max_chars: int | None = None) -> str:
    """``text`` with the secrets it may carry (keys, bearer tokens, ``api_key=…`` pairs) replaced by [REDACTED],
    then cut to ``max_chars`` with an ellipsis."""
    text = _TEXT_SECRETS[0].sub(lambda match: f"{match.group(1)} {REDACTED}", text)
    text = _TEXT_SECRETS[1].sub(REDACTED, text)
    text = _TEXT_SECRETS[2].sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    if max_chars is not None and len(text) > max_chars:
        return text[:max_chars] + "…"
    return text

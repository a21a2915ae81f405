"""Serializer fields shared by the API modules."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

NUL_MESSAGE = "NUL (\\u0000) characters are not allowed"


def nul_path(value: Any) -> str | None:
    """The dotted path of the first string or key holding U+0000 in ``value`` ("" for ``value`` itself), or None.

    Iterative, so any depth the JSON parser allowed is fine.
    """
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return path
                pending.append((f"{path}.{key}" if path else str(key), child))
        elif isinstance(item, list):
            pending.extend((f"{path}.{index}" if path else str(index), child) for index, child in enumerate(item))
    return None


class FreeFormDictField(serializers.DictField):
    """A JSON object of any shape that is stored (metadata, parameters, a run's input): like DRF's CharField for
    strings, it refuses NUL characters anywhere inside, which PostgreSQL's jsonb cannot hold."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        where = nul_path(value)
        if where is not None:
            raise serializers.ValidationError(f"{NUL_MESSAGE} (at '{where}')." if where else f"{NUL_MESSAGE}.")
        return value

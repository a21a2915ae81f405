"""Serializer fields shared by the API modules.

Input fields take JSON's types as the schema states them: a string field refuses a number, a boolean or an object
instead of coercing it (DRF turns ``0`` into ``"0"``), so what the schema says is what is accepted. Free-form
objects that are stored refuse NUL characters, which PostgreSQL's jsonb cannot hold."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from memory_app.text import LONE_SURROGATE

NUL_MESSAGE = "NUL (\\u0000) characters are not allowed"
LONE_SURROGATE_MESSAGE = "Lone UTF-16 surrogates (\\ud800-\\udfff) are not allowed."


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


def lone_surrogate_path(value: Any) -> str | None:
    """The path of the first string or key holding a lone UTF-16 surrogate in ``value`` ("" for ``value``
    itself), or None: ``input.text``, ``messages[1].content`` as the API names fields. A key in the path is
    written with its surrogates escaped (``\\ud800``), so the path itself can be encoded.

    Iterative, so any depth the JSON parser allowed is fine.
    """
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            # Reversed onto the stack: the first offending key in document order is the one named.
            for key, child in reversed(item.items()):
                name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
                child_path = f"{path}.{name}" if path else name
                if LONE_SURROGATE.search(str(key)):
                    pending.append((child_path, str(key)))
                else:
                    pending.append((child_path, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
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


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number only: ``"0.5"`` and ``false`` are refused rather than coerced (the schema says number)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: ``0``, ``"yes"`` and ``"true"`` are refused rather than coerced."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictRegexField(serializers.RegexField):
    """A string the whole of which matches: DRF's RegexField searches, so ``$`` lets a trailing newline through,
    where the schema's pattern (and the rest of the code, with ``fullmatch``) does not."""

    default_error_messages = {"invalid": "Must be a string matching the pattern."}

    def __init__(self, regex: str | re.Pattern[str], **kwargs: Any) -> None:
        super().__init__(regex, **kwargs)
        self.full_pattern = re.compile(regex) if isinstance(regex, str) else regex

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not self.full_pattern.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


def ProjectIdField(**kwargs: Any) -> StrictRegexField:
    """A project id, refused with the same message as everywhere else."""
    from memory_app.models import PROJECT_ID_PATTERN

    kwargs.setdefault("max_length", 64)
    kwargs.setdefault(
        "error_messages",
        {"invalid": "A project id is 1-64 letters, digits, '-' or '_', starting with a letter or digit."},
    )
    return StrictRegexField(PROJECT_ID_PATTERN, **kwargs)


class StrictChoiceField(serializers.ChoiceField):
    """A choice among strings, given as a string: ``0`` is not ``"0"``."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: ``"3"``, ``3.0`` and ``true`` are refused rather than coerced."""

    default_error_messages = {"invalid": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class NoUnknownFieldsMixin:
    """A serializer that refuses fields it does not declare (400 naming them) instead of ignoring them: a
    misspelt field of an edit would otherwise change nothing and still answer 200."""

    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]  # the serializer this is mixed into


class NoUnknownFieldsSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]  # registration in an untyped __init_subclass__
    """In the OpenAPI document, a ``NoUnknownFieldsMixin`` serializer's object says so: additionalProperties false
    (a client generated from it, or a fuzzer, then knows an extra field is refused)."""

    target_class = NoUnknownFieldsMixin
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema

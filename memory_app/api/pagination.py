"""Pagination that refuses, rather than silently clamps, a page size over the maximum."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from memory_app.errors import ValidationFailed


def parse_limit(
    request: Request, *, name: str = "limit", default: int | None = None, maximum: int | None = None
) -> int:
    """An integer query parameter in 1..maximum, or a 400 that names it."""
    maximum = maximum or settings.MEMORY.api.max_page_size
    default = default or settings.MEMORY.api.default_page_size
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # "" is refused like any other non-integer: the schema says integer, and a silent default hides a client bug.
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(
            f"'{name}' must be an integer.", details={"fields": {name: ["Not an integer."]}}
        ) from None
    if not 1 <= value <= maximum:
        raise ValidationFailed(
            f"'{name}' must be between 1 and {maximum}.",
            details={"fields": {name: [f"Must be between 1 and {maximum}."]}},
        )
    return value


class StrictPageNumberPagination(PageNumberPagination):
    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:  # type: ignore[override]  # DRF's attribute, read from the config here
        return settings.MEMORY.api.max_page_size

    def get_page_size(self, request: Request) -> int:
        return parse_limit(request, name=self.page_size_query_param, default=self.page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        """DRF's two parameters with the bounds this class enforces (a page below 1 or a size out of range is a
        400; a page past the last one is a 404)."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters


class MessagePagePagination(StrictPageNumberPagination):
    """A context's messages: DRF's page, plus the context's id and whether archived messages are included (what
    ``ContextMessagesView.get`` adds to the page)."""

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        page = super().get_paginated_response_schema(schema)
        page["properties"] = {
            "context_id": {"type": "string", "format": "uuid"},
            "include_archived": {"type": "boolean"},
            **page["properties"],
        }
        page["required"] = ["context_id", "include_archived", *page.get("required", [])]
        return page

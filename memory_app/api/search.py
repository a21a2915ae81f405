"""/api/memory/search: ranked hits over the caller's messages (archived ones too), history records, characters and
story texts (``memory_app.selectors.search.memory_search``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.pagination import parse_limit
from memory_app.api.schema import PROJECT_ID_FILTER_PATTERN
from memory_app.errors import ValidationFailed
from memory_app.models import SearchKind
from memory_app.search_text import query_words
from memory_app.selectors.projects import project_get
from memory_app.selectors.search import SearchHit, memory_search

_KIND = "(?:" + "|".join(SearchKind.values) + ")"
KINDS_PATTERN = rf"^{_KIND}(?:,{_KIND})*$"


class SearchHitSerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=SearchKind.choices, source="entry.kind")
    id = serializers.CharField(
        source="entry.object_id",
        help_text="The message's or record's number, the character's number, or the run's UUID.",
    )
    project_id = serializers.SerializerMethodField()
    snippet = serializers.CharField(help_text="Text around the first match, HTML-escaped, matches in <mark>.")
    score = serializers.FloatField(help_text="Higher is better; comparable within one answer only.")
    created_at = serializers.DateTimeField(source="entry.created_at")

    def get_project_id(self, hit: SearchHit) -> str | None:
        project = hit.entry.project
        return project.public_id if project is not None else None


SEARCH_ANSWER = inline_serializer(
    "SearchResults",
    {
        "hits": SearchHitSerializer(many=True),
        "mode": serializers.ChoiceField(choices=["lexical", "hybrid"]),
        "degraded": serializers.CharField(allow_null=True),
        "query_words": serializers.ListField(child=serializers.CharField()),
        "kinds": serializers.ListField(child=serializers.ChoiceField(choices=SearchKind.choices)),
        "limit": serializers.IntegerField(),
    },
)


def _query(request: Request) -> str:
    limit = settings.MEMORY.search.max_query_chars
    query = request.query_params.get("q", "")
    if not query.strip():
        raise ValidationFailed("'q' is required: the words to search for.", details={"fields": {"q": ["Required."]}})
    if len(query) > limit:
        raise ValidationFailed(
            f"'q' is at most {limit} characters.", details={"fields": {"q": [f"At most {limit} characters."]}}
        )
    return query


def _kinds(request: Request) -> list[str]:
    raw = request.query_params.get("kinds")
    if raw is None or raw == "":
        return list(SearchKind.values)
    kinds = [kind.strip() for kind in raw.split(",")]
    unknown = [kind for kind in kinds if kind not in SearchKind.values]
    if unknown:
        raise ValidationFailed(
            f"Unknown kinds: {', '.join(repr(kind) for kind in unknown)}; known: {', '.join(SearchKind.values)}.",
            details={"fields": {"kinds": [f"Unknown: {', '.join(unknown)}."]}},
        )
    return list(dict.fromkeys(kinds))


class MemorySearchView(APIView):
    @extend_schema(
        tags=["search"],
        summary="Search the memory by words",
        parameters=[
            OpenApiParameter(
                "q",
                {"type": "string", "minLength": 1, "maxLength": settings.MEMORY.search.max_query_chars},
                required=True,
                description="The words to search for (Chinese is cut into words; any of them matches, more and "
                "rarer words rank higher). Punctuation alone finds nothing.",
                pattern=r"\S",
            ),
            OpenApiParameter(
                "project_id",
                OpenApiTypes.STR,
                description="Only this project's objects (one of yours); all of yours when absent.",
                pattern=PROJECT_ID_FILTER_PATTERN,
            ),
            OpenApiParameter(
                "kinds",
                OpenApiTypes.STR,
                description="Comma-separated kinds to search: " + ", ".join(SearchKind.values) + " (default: all).",
                pattern=KINDS_PATTERN,
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": settings.MEMORY.search.max_limit},
                description=f"How many hits: 1..{settings.MEMORY.search.max_limit}, default "
                f"{settings.MEMORY.search.default_limit}.",
            ),
        ],
        responses=SEARCH_ANSWER,
    )
    def get(self, request: Request) -> Response:
        query = _query(request)
        kinds = _kinds(request)
        config = settings.MEMORY.search
        limit = parse_limit(request, default=config.default_limit, maximum=config.max_limit)
        project_id = request.query_params.get("project_id") or None
        project = project_get(user=request.user, project_id=project_id) if project_id is not None else None
        results = memory_search(query, user=request.user, kinds=kinds, project=project, limit=limit)
        return Response(
            {
                "hits": SearchHitSerializer(results.hits, many=True).data,
                "mode": results.mode,
                "degraded": results.degraded,
                "query_words": query_words(query),
                "kinds": kinds,
                "limit": limit,
            }
        )

"""/api/memory/history/… and /api/memory/timeline/… (seed §3.4, §10.1), and the project's history archives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse
from django.utils import timezone
from django.utils.timezone import get_current_timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.filters import HistoryFilterSet, history_filters_from
from memory_app.api.pagination import parse_limit
from memory_app.api.schema import HISTORY_SCOPE_PATTERN
from memory_app.errors import NotFound
from memory_app.models import HistoryArchive, HistoryRecord
from memory_app.selectors.history import (
    HistoryFilters,
    HistoryRow,
    HistoryRowPage,
    HistoryScope,
    history_archive_get,
    history_archive_list,
    history_page_rows,
    history_scope_get,
)
from memory_app.selectors.history_timeline import history_timeline_summary
from memory_app.selectors.projects import history_details_linker, history_details_public


class HistoryRecordSerializer(serializers.ModelSerializer[HistoryRecord]):
    """What a history page shows of a record: it describes the schema; the views build the same output from
    rows (``_records_data``), and a test checks the two agree."""

    user_id = serializers.IntegerField(allow_null=True, read_only=True)
    username = serializers.SerializerMethodField()

    class Meta:
        model = HistoryRecord
        fields = ["id", "timestamp", "action", "summary", "details", "user_id", "username", "request_id", "workflow_id"]

    def get_username(self, record: HistoryRecord) -> str | None:
        return record.user.get_username() if record.user is not None else None

    def to_representation(self, instance: HistoryRecord) -> dict[str, Any]:
        return _public_details(super().to_representation(instance), instance, self.context)


class TimelineEntrySerializer(serializers.ModelSerializer[HistoryRecord]):
    """A timeline entry: described here, built from rows by ``_timeline_data`` (as HistoryRecordSerializer)."""

    class Meta:
        model = HistoryRecord
        fields = ["id", "timestamp", "action", "summary", "details"]

    def to_representation(self, instance: HistoryRecord) -> dict[str, Any]:
        return _public_details(super().to_representation(instance), instance, self.context)


def _public_details(
    representation: dict[str, Any], record: HistoryRecord, context: Mapping[str, Any]
) -> dict[str, Any]:
    request: Request | None = context.get("request")
    representation["details"] = history_details_public(
        representation["details"],
        project=context.get("project"),
        workflow_id=record.workflow_id,
        absolute_url=request.build_absolute_uri if request is not None else None,
    )
    return representation


class HistoryArchiveSerializer(serializers.ModelSerializer[HistoryArchive]):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = HistoryArchive
        fields = [
            "id",
            "month",
            "record_count",
            "size_bytes",
            "compressed",
            "checksum",
            "first_timestamp",
            "last_timestamp",
            "updated_at",
            "download_name",
            "download_url",
        ]

    def get_download_url(self, archive: HistoryArchive) -> str:
        scope = archive.project.public_id if archive.project is not None else archive.scope
        return f"/api/memory/history/{scope}/archives/{archive.pk}"


HISTORY_PAGE = inline_serializer(
    "HistoryPage",
    {
        "project_id": serializers.CharField(),
        "records": HistoryRecordSerializer(many=True),
        "count": serializers.IntegerField(),
        "limit": serializers.IntegerField(),
        "order": serializers.ChoiceField(choices=["asc", "desc"]),
        "next_cursor": serializers.CharField(allow_null=True),
        "has_more": serializers.BooleanField(),
    },
)
TIMELINE = inline_serializer(
    "Timeline",
    {
        "project_id": serializers.CharField(),
        "timeline": TimelineEntrySerializer(many=True),
        "summary": inline_serializer(
            "TimelineSummary",
            {
                "total_actions": serializers.IntegerField(),
                "duration_days": serializers.IntegerField(),
                "most_common_action": serializers.CharField(allow_null=True),
                "first_timestamp": serializers.DateTimeField(allow_null=True),
                "last_timestamp": serializers.DateTimeField(allow_null=True),
                "archived_actions": serializers.IntegerField(),
            },
        ),
        "next_cursor": serializers.CharField(allow_null=True),
        "has_more": serializers.BooleanField(),
        "generated_at": serializers.DateTimeField(),
    },
)
ARCHIVE_LIST = inline_serializer(
    "HistoryArchiveList",
    {"project_id": serializers.CharField(), "archives": HistoryArchiveSerializer(many=True)},
)

SCOPE_PATH = OpenApiParameter("project_id", str, OpenApiParameter.PATH, pattern=HISTORY_SCOPE_PATTERN)
FILTER_PARAMETERS = [
    SCOPE_PATH,
    # The views page through a selector rather than a listed queryset, so the FilterSet's parameters are named here.
    *[
        OpenApiParameter(name, OpenApiTypes.STR, description=history_filter.extra["help_text"])
        for name, history_filter in HistoryFilterSet.base_filters.items()
    ],
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": settings.MEMORY.api.max_page_size},
        description=f"1..{settings.MEMORY.api.max_page_size}, default {settings.MEMORY.api.default_page_size}",
    ),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="next_cursor of the previous page"),
]


def _page(
    request: Request, scope: HistoryScope, *, default_order: str
) -> tuple[HistoryFilters, int, str, HistoryRowPage]:
    """The query parameters both routes share, parsed, and the page they select."""
    filters = history_filters_from(request)
    limit = parse_limit(request)
    order = request.query_params.get("order") or default_order
    page = history_page_rows(
        scope=scope, filters=filters, limit=limit, order=order, cursor=request.query_params.get("cursor")
    )
    return filters, limit, order, page


def _timestamps(rows: list[HistoryRow]) -> list[str]:
    """The rows' timestamps as DRF's DateTimeField writes them (ISO 8601 in the current time zone, microseconds
    when there are any, UTC as "Z"), written by orjson for the whole page at once: the same text, a tenth of the
    cost of 50 ``isoformat`` calls."""
    zone: dt.tzinfo = get_current_timezone()
    if getattr(zone, "key", None) == "UTC":
        zone = dt.UTC  # the rows' own: they need no conversion
    values = [row.timestamp if row.timestamp.tzinfo is zone else row.timestamp.astimezone(zone) for row in rows]
    texts: list[str] = orjson.loads(orjson.dumps(values, option=orjson.OPT_UTC_Z))
    return texts


def _records_data(rows: list[HistoryRow], scope: HistoryScope, request: Request) -> list[dict[str, Any]]:
    """HistoryRecordSerializer's output for each row, built directly: 50 records through DRF's fields cost more
    than the page's query."""
    public = history_details_linker(project=scope.project, absolute_url=request.build_absolute_uri)
    return [
        {
            "id": row.id,
            "timestamp": timestamp,
            "action": row.action,
            "summary": row.summary,
            "details": public(row.details, row.workflow_id),
            "user_id": row.user_id,
            "username": row.username,
            "request_id": row.request_id,
            "workflow_id": str(row.workflow_id) if row.workflow_id is not None else None,
        }
        for row, timestamp in zip(rows, _timestamps(rows), strict=True)
    ]


# What a timeline entry shows of a record (TimelineEntrySerializer's fields).
_TIMELINE_FIELDS = ("id", "timestamp", "action", "summary", "details")


def _timeline_data(rows: list[HistoryRow], scope: HistoryScope, request: Request) -> list[dict[str, Any]]:
    """TimelineEntrySerializer's output for each row: the record's answer (``_records_data``) cut to its fields."""
    return [{name: record[name] for name in _TIMELINE_FIELDS} for record in _records_data(rows, scope, request)]


class HistoryView(APIView):
    @extend_schema(
        tags=["history"],
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("order", OpenApiTypes.STR, enum=["desc", "asc"], description="newest first by default"),
        ],
        responses=HISTORY_PAGE,
    )
    def get(self, request: Request, project_id: str) -> Response:
        scope = history_scope_get(user=request.user, project_id=project_id)
        _, limit, order, page = _page(request, scope, default_order="desc")
        return Response(
            {
                "project_id": scope.public_id,
                "records": _records_data(page.rows, scope, request),
                "count": len(page.rows),
                "limit": limit,
                "order": order,
                "next_cursor": page.next_cursor,
                "has_more": page.next_cursor is not None,
            }
        )


class TimelineView(APIView):
    @extend_schema(
        tags=["history"],
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"], description="oldest first by default"),
        ],
        responses=TIMELINE,
    )
    def get(self, request: Request, project_id: str) -> Response:
        scope = history_scope_get(user=request.user, project_id=project_id)
        filters, _, _, page = _page(request, scope, default_order="asc")
        summary = history_timeline_summary(scope=scope, filters=filters)
        return Response(
            {
                "project_id": scope.public_id,
                "timeline": _timeline_data(page.rows, scope, request),
                "summary": {
                    "total_actions": summary.total_actions,
                    "duration_days": summary.duration_days,
                    "most_common_action": summary.most_common_action,
                    "first_timestamp": summary.first_timestamp,
                    "last_timestamp": summary.last_timestamp,
                    "archived_actions": summary.archived_actions,
                },
                "next_cursor": page.next_cursor,
                "has_more": page.next_cursor is not None,
                "generated_at": timezone.now(),
            }
        )


class HistoryArchiveListView(APIView):
    """The archives of one of the caller's projects (staff: any project's, and ``_system``)."""

    @extend_schema(
        tags=["history"],
        operation_id="memory_history_archives_list",
        parameters=[SCOPE_PATH],
        responses=ARCHIVE_LIST,
    )
    def get(self, request: Request, project_id: str) -> Response:
        scope = history_scope_get(user=request.user, project_id=project_id)
        archives = history_archive_list(scope=scope)
        return Response({"project_id": scope.public_id, "archives": HistoryArchiveSerializer(archives, many=True).data})


class AnyContentNegotiation(BaseContentNegotiation):
    """A download answers whatever the client accepts: the file when it exists, the JSON envelope otherwise."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return (renderer, renderer.media_type)


class HistoryArchiveDownloadView(APIView):
    content_negotiation_class = AnyContentNegotiation

    @extend_schema(
        tags=["history"],
        operation_id="memory_history_archive_download",
        parameters=[SCOPE_PATH, OpenApiParameter("archive_id", int, OpenApiParameter.PATH)],
        responses={(200, "application/gzip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, project_id: str, archive_id: str) -> FileResponse:
        scope = history_scope_get(user=request.user, project_id=project_id)
        archive = history_archive_get(scope=scope, archive_id=archive_id)
        # The storage name comes from the manifest row, never from the request.
        try:
            handle = default_storage.open(archive.file_name, "rb")
        except FileNotFoundError:
            raise NotFound(
                f"The file of archive {archive.pk} is missing from storage.",
                details={"archive_id": archive.pk, "suggestion": "Run the integrity check or restore the storage."},
            ) from None
        return FileResponse(
            handle,
            as_attachment=True,
            filename=archive.download_name,
            content_type="application/gzip" if archive.compressed else "application/x-ndjson",
        )

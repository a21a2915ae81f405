"""Monitoring routes: GET /api/memory/metrics (§9.1), GET /api/memory/analysis (§9.2), and /metrics (Prometheus).

The figures are system-wide (memory of the machine, every namespace, every run), so the two JSON routes are for
staff; a normal user gets 403 PERMISSION_DENIED.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.cache_store import SHARED_LAYER_ERRORS, shared_layer_unavailable
from memory_app.errors import ValidationFailed
from memory_app.metrics import metrics_exposition
from memory_app.selectors.operations import metrics_current, usage_analysis
from memory_app.services.cache import cache_statistics_flush


def _longest_window() -> int:
    return settings.MEMORY.monitoring.snapshot_retention_days * 24


_CachePerformance = inline_serializer(
    "CachePerformance",
    {
        "hit_rate": serializers.FloatField(help_text="Percent, e.g. 85.2."),
        "avg_latency_ms": serializers.FloatField(help_text="Mean lookup time on this machine."),
        "total_requests": serializers.IntegerField(),
    },
)


class MemoryMetricsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["operations"],
        responses=inline_serializer(
            "MemoryMetrics",
            {
                "timestamp": serializers.DateTimeField(),
                "memory_usage": inline_serializer(
                    "MemoryUsage",
                    {
                        "total": serializers.IntegerField(),
                        "used": serializers.IntegerField(),
                        "percentage": serializers.FloatField(),
                    },
                ),
                "cache_performance": serializers.DictField(child=_CachePerformance),
                "active_contexts": serializers.IntegerField(),
                "workflow_states": serializers.DictField(child=serializers.IntegerField()),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        try:
            # This process's pending cache counts first, so the figures include its own lookups.
            cache_statistics_flush()
        except SHARED_LAYER_ERRORS as exc:
            raise shared_layer_unavailable(exc) from None
        return Response(metrics_current())


class MemoryAnalysisView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["operations"],
        parameters=[
            OpenApiParameter(
                "hours",
                {"type": "integer", "minimum": 1, "maximum": _longest_window()},
                description="Window of snapshots analysed (default 24), at most the snapshot retention.",
            )
        ],
        responses=inline_serializer(
            "UsageAnalysis",
            {
                "window_hours": serializers.IntegerField(),
                "snapshots": serializers.IntegerField(),
                "peak_usage_hours": serializers.ListField(child=serializers.DictField()),
                "most_accessed_data": inline_serializer(
                    "MostAccessedData",
                    {
                        "cache_namespaces": serializers.ListField(child=serializers.DictField()),
                        "projects": serializers.ListField(child=serializers.DictField()),
                    },
                ),
                "cache_efficiency": serializers.DictField(child=serializers.DictField()),
                "recommendations": serializers.ListField(child=serializers.DictField()),
                "generated_at": serializers.DateTimeField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("hours", "24")
        longest = _longest_window()
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= longest:
            raise ValidationFailed(
                f"hours must be a whole number from 1 to {longest} (the snapshot retention).",
                details={"fields": {"hours": [f"Expected 1..{longest}, got {raw!r}."]}},
            )
        return Response(usage_analysis(hours=int(raw)))


SCRAPER_USERNAME = "prometheus"


def _scrape_allowed(request: HttpRequest) -> bool:
    """A staff session, ``Authorization: Bearer <METRICS_TOKEN>``, or basic auth prometheus:<METRICS_PASSWORD>.

    Where a request comes from grants nothing: behind a reverse proxy on the same host every request arrives from
    loopback, and ``X-Forwarded-For`` is whatever the client wrote.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    monitoring = settings.MEMORY.monitoring
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and monitoring.metrics_token:
        return hmac.compare_digest(credentials.strip().encode(), monitoring.metrics_token.encode())
    if scheme.lower() != "basic" or not monitoring.metrics_password:
        return False
    try:
        username, _, given = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return username == SCRAPER_USERNAME and hmac.compare_digest(given.encode(), monitoring.metrics_password.encode())


@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text format (plain text, outside the API and its envelope)."""
    if not _scrape_allowed(request):
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Basic realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)

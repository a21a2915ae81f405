"""/api/memory/cache/: statistics of every namespace and emptying one, both for staff: the figures are system-wide."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.selectors.cache import cache_statistics_list
from memory_app.services.cache import cache_clear, cache_statistics_flush

_NamespaceStatistics = inline_serializer(
    "CacheNamespaceStatistics",
    {
        "backend": serializers.ChoiceField(choices=["memory", "file"]),
        "hit_rate": serializers.CharField(help_text='Hits over lookups, e.g. "85.2%".'),
        "hit_rate_value": serializers.FloatField(help_text="The same as a fraction, e.g. 0.852."),
        "hits": serializers.IntegerField(),
        "misses": serializers.IntegerField(),
        "corrupted": serializers.IntegerField(help_text="Blobs that failed verification (file namespaces)."),
        "evictions": serializers.IntegerField(),
        "current_size": serializers.IntegerField(help_text="Live entries."),
        "max_size": serializers.IntegerField(allow_null=True),
        "ttl_seconds": serializers.IntegerField(),
        "memory_usage": serializers.CharField(help_text='Bytes held, human-readable, e.g. "2.3MB".'),
        "memory_usage_bytes": serializers.IntegerField(),
        "disk_usage_bytes": serializers.IntegerField(required=False, help_text="File namespaces only."),
        "max_disk_usage_bytes": serializers.IntegerField(required=False, allow_null=True),
    },
)


class CacheStatsView(APIView):
    # Counters of every user's calls together (the hit rates, the memory held): like /api/memory/metrics.
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["cache"],
        responses=inline_serializer("CacheStatistics", {"caches": serializers.DictField(child=_NamespaceStatistics)}),
    )
    def get(self, request: Request) -> Response:
        cache_statistics_flush()  # this process's pending counts first, so the figures include its own lookups
        return Response({"caches": cache_statistics_list()})


class CacheNamespaceView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["cache"],
        responses={
            200: inline_serializer(
                "CacheCleared",
                {
                    "cache_type": serializers.CharField(),
                    "cleared": serializers.BooleanField(),
                    "entries_removed": serializers.IntegerField(),
                },
            ),
            404: OpenApiResponse(description="Unknown namespace (MEMORY_NOT_FOUND)."),
        },
    )
    def delete(self, request: Request, cache_type: str) -> Response:
        removed = cache_clear(namespace=cache_type, user=authenticated_user(request))
        return Response({"cache_type": cache_type, "cleared": True, "entries_removed": removed})

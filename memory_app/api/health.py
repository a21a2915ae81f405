"""GET /api/health/: no authentication; 503 naming the required component that is down; 200 with status
"degraded" naming an optional one (the lettering font) that is not ok."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from memory_app.errors import ServiceUnavailable
from memory_app.services.health import health_check


class HealthView(APIView):
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    throttle_classes: list[type[BaseThrottle]] = []

    @extend_schema(
        tags=["health"],
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.CharField(help_text="ok, or degraded when an optional component is not ok"),
                "degraded": serializers.ListField(child=serializers.CharField(), required=False),
                "components": serializers.DictField(child=serializers.DictField()),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        components = health_check()
        report = {component.name: {"ok": component.ok, "detail": component.detail} for component in components}
        down = [component.name for component in components if not component.ok and component.required]
        if down:
            raise ServiceUnavailable(
                f"Unavailable: {', '.join(down)}.", details={"unavailable": down, "components": report}
            )
        degraded = [component.name for component in components if not component.ok]
        if degraded:
            return Response({"status": "degraded", "degraded": degraded, "components": report})
        return Response({"status": "ok", "components": report})

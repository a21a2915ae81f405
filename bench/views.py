"""The bare baseline of the HTTP benchmark: a DRF view on the same stack and server settings (the same middleware,
token authentication and throttling, the same database settings) that does one INSERT and answers plain JSON."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.models import HistoryRecord


class BareInsertView(APIView):
    renderer_classes = [JSONRenderer]

    def post(self, request: Request) -> Response:
        # One INSERT of a row of the product's size, nothing else: no validation, no history, no envelope.
        row = HistoryRecord.objects.create(
            project=None, timestamp=timezone.now(), action="bench", summary=str(request.data.get("content", ""))[:500]
        )
        return Response({"id": row.pk}, status=status.HTTP_201_CREATED)

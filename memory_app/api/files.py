"""GET /api/files/<token>: a blob named by a signed, expiring token, for browsers that load images without an
Authorization header (the embedded mode's signed URLs; with an object store the URLs are the store's own presigned
ones). 403 when the token is tampered with or expired, 404 when the blob is gone."""

from __future__ import annotations

import mimetypes

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from memory_app.api.history import AnyContentNegotiation
from memory_app.blob_storage import BlobTokenRefused, blob_storage, blob_token_read
from memory_app.errors import NotFound, PermissionDenied


class SignedBlobView(APIView):
    # The token is the credential: no session or token authentication, so no CSRF and no Authorization header.
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    # A page of a comic loads dozens of panels at once, all "anonymous" here: the anon rate would refuse them.
    # A forged token costs one HMAC check; only URLs this app signed reach storage.
    throttle_classes: list[type[BaseThrottle]] = []
    content_negotiation_class = AnyContentNegotiation

    @extend_schema(
        tags=["files"],
        operation_id="files_signed_retrieve",
        parameters=[OpenApiParameter("token", str, OpenApiParameter.PATH, description="A signed URL's token.")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
        auth=[],
    )
    def get(self, request: Request, token: str) -> FileResponse:
        try:
            alias, name = blob_token_read(token=token)
        except BlobTokenRefused as exc:
            raise PermissionDenied(str(exc), details={"suggestion": "Ask the API for a fresh URL."}) from None
        try:
            handle = blob_storage(alias).open(name, "rb")
        except FileNotFoundError:
            raise NotFound(
                "This file no longer exists.", details={"suggestion": "Ask the API for a fresh URL."}
            ) from None
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = FileResponse(handle, content_type=content_type)
        # The URL is the capability: private caches may keep it, shared ones may not.
        response["Cache-Control"] = "private, max-age=300"
        return response

"""Request id, timing, the API body limit and the security headers; they run before anything reads the body."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import unquote

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from memory_app.errors import MalformedRequest, PayloadTooLarge
from memory_app.instruments import HTTP_LATENCY, HTTP_REQUESTS
from memory_app.logging import current_request, current_request_id

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


class RequestContextMiddleware:
    """Takes a valid X-Request-ID or makes one, starts the clock, echoes the id in the response header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.match(supplied) else new_request_id()
        started_at = time.perf_counter()
        # Our own attributes on the request, read with getattr (the envelope's metadata, the conversation view).
        request.request_id = request_id  # type: ignore[attr-defined]  # ours (see above)
        request.started_at = started_at  # type: ignore[attr-defined]  # ours (see above)
        token = current_request_id.set(request_id)
        request_token = current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
            current_request.reset(request_token)
        response[REQUEST_ID_HEADER] = request_id
        route = route_label(request)
        method = request.method if request.method in _KNOWN_METHODS else "other"
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started_at)
        return response


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(request: HttpRequest) -> str:
    """The resolved route's name (or its pattern when unnamed), never the raw path: labels stay bounded."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name if match.url_name else (match.route or "unmatched")


def _query_has_nul(request: HttpRequest) -> bool:
    # PostgreSQL cannot compare text with a NUL in it: such a filter would be a database error. (A path segment is
    # validated by its view, and the exception handler answers 400 to any database DataError left.) The raw query
    # string is read, not request.GET: parsing it here would meet DATA_UPLOAD_MAX_NUMBER_FIELDS outside DRF.
    return "\x00" in unquote(request.META.get("QUERY_STRING", ""))


_REFERENCE_UPLOAD = re.compile(r"^/api/characters/[^/]+/references/?$")


class ApiBodyLimitMiddleware:
    """Refuses an API body over memory.api.max_body_bytes from its Content-Length, before it is read, and a NUL
    character in the query string.

    A body without a Content-Length (chunked) is bounded while it is parsed (LimitedJSONParser).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/") and _query_has_nul(request):
            from memory_app.api.envelope import error_response

            return error_response(request, MalformedRequest("NUL characters are refused in the query string."))
        if request.path.startswith("/api/"):
            limit = settings.MEMORY.api.max_body_bytes
            if _REFERENCE_UPLOAD.match(request.path):
                # An image upload has its own limit (the view checks the file itself against it); room is left for
                # the multipart framing around it.
                limit = max(limit, settings.MEMORY.pipelines.reference_max_bytes + 64 * 1024)
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                from memory_app.api.envelope import error_response

                return error_response(
                    request,
                    PayloadTooLarge(
                        f"The request body is {length} bytes; the limit is {limit}.",
                        details={"limit_bytes": limit, "content_length": length},
                    ),
                )
        return self.get_response(request)


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every response, which Django 5.2 does not set itself.

    A JSON answer, a metric or an image opened in a browser may run nothing, load nothing and be framed by
    nobody; an HTML page of ours (admin, interactive docs) keeps its own scripts and is only kept out of frames.
    Placed right after SecurityMiddleware, so answers that middleware further down returns (the body limit) get
    it too.
    """

    STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    HTML_POLICY = "frame-ancestors 'none'"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            is_html = response.get("Content-Type", "").startswith("text/html")
            response["Content-Security-Policy"] = self.HTML_POLICY if is_html else self.STRICT_POLICY
        return response

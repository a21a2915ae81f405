"""The response envelope of seed §10.2, for every response under /api/, success and error alike.

- ``EnvelopeJSONRenderer`` wraps what a view returns: ``{"success": true, "data": …, "metadata": …}``.
- ``exception_handler`` turns every exception (ours, DRF's, Django's, unexpected ones) into
  ``{"code", "message", "details"}`` with a status; the renderer wraps that as ``{"success": false, "error": …}``.
- ``error_response`` does the same for the few places outside DRF views (middleware, unknown routes).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions as drf_exceptions
from rest_framework import parsers, renderers
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from memory_app.api.fields import LONE_SURROGATE_MESSAGE, lone_surrogate_path
from memory_app.errors import ComicmemError, ErrorCode, PayloadTooLarge
from memory_app.text import LONE_SURROGATE, surrogates_replaced

logger = logging.getLogger("memory_app.api")


def response_metadata(request: HttpRequest | None) -> dict[str, Any]:
    started = getattr(request, "started_at", None)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2) if started is not None else 0.0
    return {
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "request_id": getattr(request, "request_id", None),
        "processing_time_ms": elapsed_ms,
    }


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


class EnvelopeJSONRenderer(renderers.JSONRenderer):
    """Wraps the view's data; an error response's data is already ``{"code", "message", "details"}``."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        renderer_context = renderer_context or {}
        response = renderer_context.get("response")
        request = renderer_context.get("request")
        is_error = response is not None and response.status_code >= 400
        if is_error:
            if not (isinstance(data, dict) and set(data) == {"code", "message", "details"}):
                # A DRF response built with an error status outside the handler: never leak its shape.
                data = error_body(ErrorCode.INTERNAL_ERROR, "Unexpected error response.", {})
            envelope = {"success": False, "error": data, "metadata": response_metadata(request)}
        else:
            envelope = {"success": True, "data": data, "metadata": response_metadata(request)}
        if self._plain(accepted_media_type, renderer_context):
            fast = _orjson_render(envelope)
            if fast is not None:
                return fast
        try:
            return super().render(envelope, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            # A lone surrogate somewhere in the answer (UTF-8 cannot hold one): the answer is still sent, with
            # U+FFFD in its place, rather than turning into a 500.
            return super().render(surrogates_replaced(envelope), accepted_media_type, renderer_context)

    def _plain(self, accepted_media_type: str | None, renderer_context: Mapping[str, Any]) -> bool:
        """Whether the answer is DRF's default JSON (compact, not indented, UTF-8): what ``_orjson_render``
        writes."""
        return (
            self.compact
            and not self.ensure_ascii
            and not renderer_context.get("indent")
            and (accepted_media_type is None or "indent" not in accepted_media_type)
        )


# DRF's encoder for what orjson leaves to it: every date and time (DRF writes UTC as "Z"), Decimal, lazy
# translation strings, and the rest of what DRF's JSONRenderer accepts.
_DRF_DEFAULT = JSONEncoder().default
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()


def _orjson_render(envelope: Any) -> bytes | None:
    """The bytes DRF's JSONRenderer writes for ``envelope`` (compact, UTF-8, U+2028 and U+2029 escaped), written
    by orjson, several times faster; None for anything orjson refuses (a lone surrogate, an integer beyond 64
    bits, a key that is not a string, nesting deeper than 254), which the caller renders as before.

    One difference: a float that is not finite (NaN, Infinity) is written as null, where DRF's strict encoder
    raised an error."""
    try:
        rendered = orjson.dumps(envelope, default=_DRF_DEFAULT, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    if _LINE_SEPARATOR in rendered or _PARAGRAPH_SEPARATOR in rendered:
        rendered = rendered.replace(_LINE_SEPARATOR, b"\\u2028").replace(_PARAGRAPH_SEPARATOR, b"\\u2029")
    return rendered


class LimitedJSONParser(parsers.JSONParser):
    """JSON parser that never reads more than memory.api.max_body_bytes, whatever the headers say."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        from django.conf import settings

        limit = settings.MEMORY.api.max_body_bytes
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"The request body is over the limit of {limit} bytes.", details={"limit_bytes": limit}
            )
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            text = raw.decode(encoding)
            document = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise drf_exceptions.ParseError("JSON nested too deeply.") from None
        except ValueError as exc:
            raise drf_exceptions.ParseError(f"JSON parse error - {exc}") from None
        # JSON may escape a lone UTF-16 surrogate ("\ud800"), and a body in another charset the client names
        # (utf-7, unicode_escape) may decode to one: no UTF-8 text, no database and no answer can hold it. Refused
        # here, once for every field, naming where. Only a body with such an escape or character is walked.
        if _SURROGATE_ESCAPE.search(text) or LONE_SURROGATE.search(text):
            _refuse_lone_surrogates(document)
        return document


def _refuse_lone_surrogates(document: Any) -> None:
    where = lone_surrogate_path(document)
    if where is not None:
        raise drf_exceptions.ValidationError({where or "non_field_errors": [LONE_SURROGATE_MESSAGE]})


def _form_fields(data: Any) -> dict[str, Any]:
    """A form's fields as the API names them: one value as it is, a repeated field as a list."""
    return {key: values[0] if len(values) == 1 else values for key, values in data.lists()}


class CheckedFormParser(parsers.FormParser):
    """DRF's form parser, refusing a lone surrogate (a form body in a charset that decodes to one) as a 400."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _refuse_lone_surrogates(_form_fields(data))
        return data


class CheckedMultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, refusing a lone surrogate in a field or a file name as a 400."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        _refuse_lone_surrogates(_form_fields(parsed.data))
        _refuse_lone_surrogates({key: [upload.name for upload in parsed.files.getlist(key)] for key in parsed.files})
        return parsed


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python would accept them silently.
    raise ValueError(f"{name} is not valid JSON")


# DRF exception class → our code. Anything not listed falls back to its status.
_DRF_CODES: list[tuple[type[Exception], ErrorCode]] = [
    (drf_exceptions.ValidationError, ErrorCode.VALIDATION_ERROR),
    (drf_exceptions.ParseError, ErrorCode.MALFORMED_REQUEST),
    (drf_exceptions.NotAuthenticated, ErrorCode.AUTHENTICATION_REQUIRED),
    (drf_exceptions.AuthenticationFailed, ErrorCode.AUTHENTICATION_FAILED),
    (drf_exceptions.PermissionDenied, ErrorCode.PERMISSION_DENIED),
    (drf_exceptions.NotFound, ErrorCode.MEMORY_NOT_FOUND),
    (drf_exceptions.MethodNotAllowed, ErrorCode.METHOD_NOT_ALLOWED),
    (drf_exceptions.NotAcceptable, ErrorCode.NOT_ACCEPTABLE),
    (drf_exceptions.UnsupportedMediaType, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (drf_exceptions.Throttled, ErrorCode.THROTTLED),
]


def _validation_details(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {"fields": detail}
    return {"fields": {"non_field_errors": detail if isinstance(detail, list) else [detail]}}


def _validation_message(detail: Any) -> str:
    if isinstance(detail, dict) and detail:
        names = ", ".join(str(name) for name in detail)
        return f"Invalid value for: {names}."
    return "The request is not valid."


def describe_exception(exc: Exception, request: HttpRequest | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, error body, extra headers) for any exception."""
    if isinstance(exc, ComicmemError):
        if exc.retry_after is None:
            return exc.status_code, error_body(exc.code, exc.message, exc.details), {}
        details: dict[str, Any] = {**exc.details, "retry_after_seconds": exc.retry_after}
        return exc.status_code, error_body(exc.code, exc.message, details), {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent):
        # Django's own DATA_UPLOAD_* limits, met while a form or multipart body is parsed.
        return 413, error_body(ErrorCode.PAYLOAD_TOO_LARGE, str(exc), {}), {}
    if isinstance(exc, SuspiciousOperation):
        return 400, error_body(ErrorCode.MALFORMED_REQUEST, "The request is malformed.", {}), {}
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, drf_exceptions.APIException):
        code = next((code for cls, code in _DRF_CODES if isinstance(exc, cls)), ErrorCode.INTERNAL_ERROR)
        headers: dict[str, str] = {}
        if isinstance(exc, drf_exceptions.ValidationError):
            return (
                exc.status_code,
                error_body(code, _validation_message(exc.detail), _validation_details(exc.detail)),
                {},
            )
        details = {}
        if isinstance(exc, drf_exceptions.Throttled):
            wait: float | None = exc.wait  # type: ignore[attr-defined]  # DRF sets it in __init__; the stubs omit it
            if wait is not None:
                details["retry_after_seconds"] = int(wait) + 1
                headers["Retry-After"] = str(int(wait) + 1)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        return exc.status_code, error_body(code, str(exc.detail), details), headers
    if isinstance(exc, DataError):
        # A value the database cannot hold (a NUL character, a number out of range) that slipped past validation:
        # the request's fault, and nothing was written (the transaction is rolled back below).
        logger.warning("value refused by the database while serving %s: %s", getattr(request, "path", "?"), exc)
        return (
            400,
            error_body(ErrorCode.VALIDATION_ERROR, "A value in the request is not valid for the database.", {}),
            {},
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("database unavailable: %s", exc)
        return (
            503,
            error_body(ErrorCode.SERVICE_UNAVAILABLE, "The database is unavailable.", {"component": "database"}),
            {"Retry-After": "5"},
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        # Throttling and caches reach Redis on every request in production: its outage is a 503, not a 500.
        logger.error("redis unavailable: %s", exc)
        return (
            503,
            error_body(ErrorCode.SERVICE_UNAVAILABLE, "The cache is unavailable.", {"component": "cache"}),
            {"Retry-After": "5"},
        )
    logger.error("unhandled exception while serving %s", getattr(request, "path", "?"), exc_info=exc)
    return 500, error_body(ErrorCode.INTERNAL_ERROR, "An unexpected error occurred.", {}), {}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception becomes an error envelope; none escapes as a bare 500."""
    # Imported here: rest_framework.views reads DEFAULT_RENDERER_CLASSES (this module) while it is imported, so
    # importing it at the top made this module unimportable before a view had been loaded — the body-limit
    # middleware's first oversized request in a fresh process was a 500.
    from rest_framework.views import set_rollback

    request = context.get("request")
    status, body, headers = describe_exception(exc, request)
    if isinstance(exc, DatabaseError) or status >= 500:
        set_rollback()
    response = Response(body, status=status, headers=headers)
    response.exception = True
    return response


def error_response(request: HttpRequest, exc: Exception) -> JsonResponse:
    """The error envelope outside DRF (middleware, unknown routes, Django's own handlers)."""
    status, body, headers = describe_exception(exc, request)
    response = JsonResponse(
        # Its message or details may quote a value holding a lone surrogate, which UTF-8 cannot encode.
        surrogates_replaced({"success": False, "error": body, "metadata": response_metadata(request)}),
        status=status,
        json_dumps_params={"ensure_ascii": False},
    )
    for name, value in headers.items():
        response[name] = value
    return response

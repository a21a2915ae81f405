"""OpenAPI: describe the envelope around every response (drf-spectacular post-processing hook)."""

from __future__ import annotations

from typing import Any

from memory_app.errors import ErrorCode
from memory_app.models import PROJECT_ID_PATTERN

# A project id, or "" (an empty filter is no filter), as a query parameter's pattern.
PROJECT_ID_FILTER_PATTERN = r"^(?:" + PROJECT_ID_PATTERN.pattern.strip("^$") + r")?$"
# A project id in a path; staff may also name the system-wide history scope.
HISTORY_SCOPE_PATTERN = r"^(?:_system|" + PROJECT_ID_PATTERN.pattern.strip("^$") + r")$"

METADATA = {
    "type": "object",
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "request_id": {"type": "string", "nullable": True},
        "processing_time_ms": {"type": "number"},
    },
    "required": ["timestamp", "request_id", "processing_time_ms"],
}
ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
        "message": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True},
    },
    "required": ["code", "message", "details"],
}
ERROR_ENVELOPE = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {"$ref": "#/components/schemas/ApiError"},
        "metadata": {"$ref": "#/components/schemas/EnvelopeMetadata"},
    },
    "required": ["success", "error", "metadata"],
}
# Every operation can answer these; operations that take a body can also answer 400, 413 and 415.
COMMON_ERRORS = {
    "401": "Authentication required or failed.",
    "403": "Permission denied.",
    "404": "Not found, or not yours.",
    "405": "Method not allowed.",
    "429": "Throttled.",
    "500": "Unexpected error (logged with the request id).",
    "503": "A backing service is unavailable.",
}
BODY_ERRORS = {"400": "Validation error.", "413": "Body too large.", "415": "Unsupported media type."}
# Every write can meet an object that exists already, a per-user limit, or a state that forbids it.
WRITE_ERRORS = {"409": "Conflict: the object exists, a limit is reached, or its state forbids the operation."}


def _success(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": schema if schema is not None else {"nullable": True},
            "metadata": {"$ref": "#/components/schemas/EnvelopeMetadata"},
        },
        "required": ["success", "data", "metadata"],
    }


# DRF's CharField refuses NUL characters in any input string; a request schema says so in its pattern.
NO_NUL = "[^\\u0000]*"


def _forbid_nul(schema: Any) -> None:
    """Every free-form string of a request schema refuses NUL, as the server does (recursively, in place)."""
    if isinstance(schema, list):
        for item in schema:
            _forbid_nul(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and "format" not in schema and "enum" not in schema:
        pattern = schema.get("pattern")
        if pattern is None:
            schema["pattern"] = f"^{NO_NUL}$"
        elif pattern == "\\S":
            schema["pattern"] = f"^{NO_NUL}[^\\s\\u0000]{NO_NUL}$"
    for key, value in schema.items():
        if key in {"properties", "additionalProperties", "items", "oneOf", "anyOf", "allOf"}:
            _forbid_nul(list(value.values()) if key == "properties" else value)


def wrap_responses_in_envelope(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in schemas.items():
        # COMPONENT_SPLIT_REQUEST: the input side of each serializer; the persistence document that import reads
        # is parsed by its own model, not by DRF's fields.
        if name.endswith("Request") and not name.startswith(("ContextPersistence", "Persisted")):
            _forbid_nul(schema)
    schemas["EnvelopeMetadata"] = METADATA
    schemas["ApiError"] = ERROR
    schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if not str(status).startswith("2"):
                    continue
                content = response.get("content", {}).get("application/json")
                if content is None and response.get("content"):
                    continue  # a file download (another media type) is not wrapped
                if content is None:
                    response["content"] = {"application/json": {"schema": _success(None)}}
                else:
                    content["schema"] = _success(content.get("schema"))
            errors = dict(COMMON_ERRORS)
            if method in {"post", "put", "patch"} or operation.get("parameters"):
                errors.update(BODY_ERRORS)
            if method != "get":
                errors.update(WRITE_ERRORS)
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, "content": error_content})
    return result

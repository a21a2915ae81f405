"""OpenAPI: describe the envelope around every response (drf-spectacular post-processing hook)."""

from __future__ import annotations

from typing import Any

from memory_app.errors import ErrorCode

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


def wrap_responses_in_envelope(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
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
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, "content": error_content})
    return result

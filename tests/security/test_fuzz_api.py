"""Property-based fuzzing of every operation of ``/api/schema/`` with schemathesis, in-process over WSGI.

Each operation gets a bounded number of generated requests (valid and invalid), authenticated with a staff
token so that the staff-only routes run their code too. Every response must be no 5xx, conform to the schema
(status code, content type, headers, body) and wear the API envelope. Findings are fixed in the code and kept
as plain regression tests in ``tests/security/test_fuzz_findings.py``.

Six examples per operation keep the run near half a minute; COMICMEM_FUZZ_EXAMPLES=40 digs deeper (about
ninety seconds on SQLite), deterministically (derandomized), so a finding reproduces.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (see requirements.txt)")

from hypothesis import HealthCheck, settings  # noqa: E402

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES_PER_OPERATION = int(os.environ.get("COMICMEM_FUZZ_EXAMPLES", "6"))
# Responses that are not JSON by design: the schema document itself, the docs page and file downloads.
NOT_ENVELOPED = {"/api/schema/", "/api/docs/"}


@pytest.fixture
def settings_override(settings, tmp_path):
    """Storage and caches of this test only; the LLM and image providers are the offline defaults."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.CACHE_DIR = tmp_path / "cache"
    settings.CACHE_DIR.mkdir()
    return settings


def envelope_conformance(ctx: Any, response: Any, case: Any) -> None:
    """Every JSON answer of /api/ is the envelope of DESIGN.md: success, data or error, metadata."""
    if case.operation.path in NOT_ENVELOPED:
        return None
    headers = {name.lower(): value for name, value in response.headers.items()}
    content_type = headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if response.status_code < 300 and not content_type.startswith("application/json"):
        return None  # a file download
    body = json.loads(response.content)
    assert isinstance(body, dict), f"not an envelope: {body!r:.200}"
    assert set(body) in ({"success", "data", "metadata"}, {"success", "error", "metadata"}), sorted(body)
    assert set(body["metadata"]) == {"timestamp", "request_id", "processing_time_ms"}, body["metadata"]
    assert body["success"] is (response.status_code < 400), (response.status_code, body["success"])
    if not body["success"]:
        error = body["error"]
        assert set(error) == {"code", "message", "details"}, error
        assert error["code"].isupper() and isinstance(error["message"], str) and isinstance(error["details"], dict)
    return None


def _load_schema() -> Any:
    """The schema as ``/api/schema/`` serves it, fetched through the project's WSGI application (no database:
    the schema view reads none), which then answers every generated request in-process."""
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


schema = _load_schema()

# Operations whose valid input has rules a JSON schema cannot state; for them "schema-valid data is accepted" is
# not a meaningful check (every other check still runs).
IMPORT_RULES = "a context's key equals its conversation_id; timestamps are epoch seconds or ISO datetimes"
HISTORY_RULES = "cursor is a signed token from a previous page; dates must be real calendar dates"
WEBHOOK_RULES = "the url's host must resolve, to public addresses only (the SSRF guard); no schema can say which do"
# metadata is stored as JSON (PostgreSQL's jsonb holds no \u0000): a NUL in any key or string at any depth is a 400
# naming where; a free-form object's schema cannot state that for nested keys.
METADATA_RULES = "no NUL character in any key or string of metadata, at any depth"
POSITIVE_ACCEPTANCE_NOT_MEANINGFUL = {
    ("POST", "/api/context/"): METADATA_RULES,
    ("POST", "/api/context/create/"): METADATA_RULES,
    ("POST", "/api/memory/context/"): METADATA_RULES,
    ("POST", "/api/memory/context/create/"): METADATA_RULES,
    ("POST", "/api/context/import/"): IMPORT_RULES,
    ("POST", "/api/memory/context/import/"): IMPORT_RULES,
    ("GET", "/api/memory/history/{project_id}/"): HISTORY_RULES,
    ("GET", "/api/memory/timeline/{project_id}/"): HISTORY_RULES,
    ("POST", "/api/webhooks/"): WEBHOOK_RULES,
    ("PATCH", "/api/webhooks/{webhook_id}/"): WEBHOOK_RULES,
}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_holds_under_fuzzing(case, staff_token, wsgi_requests, settings_override):
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    key = (case.operation.method.upper(), case.operation.path)
    excluded = [positive_data_acceptance] if key in POSITIVE_ACCEPTANCE_NOT_MEANINGFUL else []
    case.call_and_validate(
        headers={"Authorization": f"Token {staff_token}"},
        additional_checks=[envelope_conformance],
        excluded_checks=excluded,
    )

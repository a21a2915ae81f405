from __future__ import annotations

import logging

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from memory_app.errors import ErrorCode
from memory_app.models import Project

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert set(body["metadata"]) == {"timestamp", "request_id", "processing_time_ms"}
    assert body["metadata"]["request_id"] == response["X-Request-ID"]
    return body


def test_success_envelope_has_data_and_metadata(auth_client, project):
    response = auth_client.get("/api/projects/proj-001/")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["id"] == "proj-001"
    assert body["metadata"]["request_id"].startswith("req-")
    assert body["metadata"]["timestamp"].endswith("Z")
    assert body["metadata"]["processing_time_ms"] >= 0


def test_valid_request_id_is_echoed_and_an_invalid_one_replaced(auth_client, project):
    echoed = auth_client.get("/api/projects/", HTTP_X_REQUEST_ID="client-abc.123")
    replaced = auth_client.get("/api/projects/", HTTP_X_REQUEST_ID="bad id\nwith newline")

    assert echoed["X-Request-ID"] == "client-abc.123"
    assert echoed.json()["metadata"]["request_id"] == "client-abc.123"
    assert replaced["X-Request-ID"].startswith("req-")
    assert "\n" not in replaced["X-Request-ID"]


def test_unknown_route_is_a_404_envelope(auth_client):
    response = auth_client.get("/api/no/such/route")

    body = assert_error(response, 404, ErrorCode.NOT_FOUND)
    assert body["error"]["details"]["path"] == "/api/no/such/route"


@override_settings(DEBUG=True)
def test_unknown_route_is_an_envelope_in_debug_too(auth_client):
    assert_error(auth_client.post("/api/nothing-here/", {}), 404, ErrorCode.NOT_FOUND)


def test_wrong_method_is_405(auth_client):
    assert_error(auth_client.put("/api/health/", {}), 405, ErrorCode.METHOD_NOT_ALLOWED)


def test_validation_error_names_the_failing_fields(auth_client):
    response = auth_client.post("/api/projects/", {"id": "../etc", "description": ["not", "text"]}, format="json")

    body = assert_error(response, 400, ErrorCode.VALIDATION_ERROR)
    assert set(body["error"]["details"]["fields"]) == {"id", "name", "description"}
    assert Project.objects.count() == 0


def test_anonymous_is_401_with_authenticate_header(api_client):
    response = api_client.get("/api/projects/")

    assert_error(response, 401, ErrorCode.AUTHENTICATION_REQUIRED)
    assert response["WWW-Authenticate"] == "Token"


def test_bad_token_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert_error(api_client.get("/api/projects/"), 401, ErrorCode.AUTHENTICATION_FAILED)


def test_session_post_without_csrf_is_403(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post("/api/projects/", {"name": "x"}, format="json")

    assert_error(response, 403, ErrorCode.PERMISSION_DENIED)
    assert Project.objects.count() == 0


def test_malformed_json_is_400_and_writes_nothing(auth_client):
    response = auth_client.post("/api/projects/", data='{"name": "x",', content_type="application/json")

    assert_error(response, 400, ErrorCode.MALFORMED_REQUEST)
    assert Project.objects.count() == 0


def test_nan_is_not_json(auth_client):
    response = auth_client.post("/api/projects/", data='{"name": NaN}', content_type="application/json")

    assert_error(response, 400, ErrorCode.MALFORMED_REQUEST)


def test_deeply_nested_json_is_400(auth_client):
    body = "[" * 100_000 + "]" * 100_000

    response = auth_client.post("/api/projects/", data=body, content_type="application/json")

    assert response.status_code in (400, 413)
    assert response.json()["success"] is False
    assert Project.objects.count() == 0


def test_wrong_content_type_is_415(auth_client):
    response = auth_client.post("/api/projects/", data="name=x", content_type="text/plain")

    assert_error(response, 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    assert Project.objects.count() == 0


def test_body_over_the_limit_is_413_and_writes_nothing(auth_client, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"api": settings.MEMORY.api.model_copy(update={"max_body_bytes": 1000})}
    )

    response = auth_client.post("/api/projects/", data='{"name": "%s"}' % ("x" * 2000), content_type="application/json")

    body = assert_error(response, 413, ErrorCode.PAYLOAD_TOO_LARGE)
    assert body["error"]["details"]["limit_bytes"] == 1000
    assert Project.objects.count() == 0


def test_default_limit_refuses_a_body_over_one_mebibyte(auth_client):
    response = auth_client.post(
        "/api/projects/", data='{"name": "%s"}' % ("x" * (1024 * 1024)), content_type="application/json"
    )

    assert_error(response, 413, ErrorCode.PAYLOAD_TOO_LARGE)


def test_throttling_is_429_with_retry_after(api_client, monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {"auth": "2/min", "anon": "1000/min", "user": "1000/min", "login": "1000/min"},
    )
    payload = {"username": "nobody", "password": "wrong"}

    statuses = [api_client.post("/api/auth/token/", payload, format="json").status_code for _ in range(3)]

    assert statuses[:2] == [401, 401]
    response = api_client.post("/api/auth/token/", payload, format="json")
    body = assert_error(response, 429, ErrorCode.THROTTLED)
    assert int(response["Retry-After"]) >= 1
    assert body["error"]["details"]["retry_after_seconds"] >= 1


def test_unexpected_exception_is_a_500_envelope_logged_with_request_id(api_client, monkeypatch, caplog):
    def explode():
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr("memory_app.api.health.health_check", explode)

    with caplog.at_level(logging.ERROR, logger="memory_app.api"):
        response = api_client.get("/api/health/", HTTP_X_REQUEST_ID="req-trace-me")

    body = assert_error(response, 500, ErrorCode.INTERNAL_ERROR)
    assert "secret internals" not in response.content.decode()
    record = next(record for record in caplog.records if record.name == "memory_app.api")
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])
    assert record.request_id == "req-trace-me"
    assert body["metadata"]["request_id"] == "req-trace-me"


def test_error_codes_are_stable_upper_case():
    for code in ErrorCode:
        assert code.value == code.name
        assert code.value.isupper()

"""Security headers on API responses, served through the production settings' middleware stack: success,
errors from views, errors from middleware (the body limit) and unknown routes alike."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

# Everything of the production settings that shapes a response's headers.
SECURITY_SETTINGS = [
    "MIDDLEWARE",
    "DEBUG",
    "ALLOWED_HOSTS",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SECURE",
    "X_FRAME_OPTIONS",
]
HOST = "comics.example.com"


def production_settings(monkeypatch) -> ModuleType:
    monkeypatch.setenv("SECRET_KEY", "p" * 60)
    monkeypatch.setenv("ALLOWED_HOSTS", HOST)
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "NUM_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "comicmem_site.settings.production", raising=False)
    module = importlib.import_module("comicmem_site.settings.production")
    monkeypatch.delitem(sys.modules, "comicmem_site.settings.production")
    return module


@pytest.fixture
def production(monkeypatch, tmp_path) -> Iterator[ModuleType]:
    module = production_settings(monkeypatch)
    values = {name: getattr(module, name) for name in SECURITY_SETTINGS if hasattr(module, name)}
    # WhiteNoise needs a static root to exist; the stack is otherwise production's own.
    with override_settings(**values, STATIC_ROOT=str(tmp_path)):
        yield module


def secure_get(client, path: str, **extra):
    return client.get(path, HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https", **extra)


def assert_security_headers(response, *, secure: bool = True) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = response.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    if secure:
        assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    else:
        assert "Strict-Transport-Security" not in response


def test_the_production_stack_is_the_one_under_test(production):
    from django.conf import settings

    assert settings.MIDDLEWARE == production.MIDDLEWARE
    assert "django.middleware.security.SecurityMiddleware" in settings.MIDDLEWARE
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE


def test_a_successful_api_answer_carries_every_security_header(production, auth_client, project):
    response = secure_get(auth_client, "/api/projects/")

    assert response.status_code == 200
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("method", "path", "status", "extra"),
    [
        ("get", "/api/projects/", 401, {}),  # anonymous: DRF's error
        ("get", "/api/no/such/route", 404, {}),  # the catch-all route
        ("get", "/api/memory/history/nope", 401, {}),
        ("post", "/api/projects/", 413, {"CONTENT_LENGTH": str(64 * 1024 * 1024)}),  # answered by middleware
    ],
)
def test_an_error_answer_carries_every_security_header(production, api_client, method, path, status, extra):
    response = getattr(api_client, method)(
        path, HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https", content_type="application/json", **extra
    )

    assert response.status_code == status
    assert response.json()["success"] is False
    assert_security_headers(response)


def test_plain_http_is_redirected_to_https_and_the_probe_is_exempt(production, api_client):
    redirected = api_client.get("/api/projects/", HTTP_HOST=HOST)
    probe = api_client.get("/api/health/", HTTP_HOST=HOST)

    assert redirected.status_code == 301
    assert redirected["Location"] == f"https://{HOST}/api/projects/"
    assert probe.status_code in {200, 503}
    # HSTS only over TLS: a browser ignores it on plain HTTP, and we do not send it there.
    assert_security_headers(probe, secure=False)


def test_an_unknown_host_is_refused(production, api_client):
    response = api_client.get("/api/health/", HTTP_HOST="evil.example", HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 400


def test_the_interactive_docs_keep_their_scripts(production, auth_client):
    # The strict policy is for JSON answers; an HTML page of our own is not given default-src 'none'.
    response = secure_get(auth_client, "/api/docs/")

    assert response.status_code == 200
    assert "default-src 'none'" not in response.get("Content-Security-Policy", "")
    assert response["X-Frame-Options"] == "DENY"

from __future__ import annotations

import pytest
from django.db import OperationalError

from comicmem_site.celery import app

pytestmark = pytest.mark.django_db


def test_health_is_ok_without_authentication(api_client):
    response = api_client.get("/api/health/")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "ok"
    assert {name: component["ok"] for name, component in data["components"].items()} == {
        "database": True,
        "broker": True,
        "cache": True,
    }


def test_unreachable_broker_is_503_naming_it(api_client, monkeypatch):
    # A real connection attempt to a port nothing listens on.
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")

    response = api_client.get("/api/health/")

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["details"]["unavailable"] == ["broker"]
    assert error["details"]["components"]["database"]["ok"] is True


def test_database_failure_is_503_naming_it(api_client, monkeypatch):
    from django.db.backends.utils import CursorWrapper

    def refuse(self, sql, params=None):
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", refuse)

    response = api_client.get("/api/health/")

    assert response.status_code == 503
    assert response.json()["error"]["details"]["unavailable"] == ["database"]


def test_a_database_error_in_any_endpoint_is_503(auth_client, monkeypatch):
    from django.db.backends.utils import CursorWrapper

    def refuse(self, sql, params=None):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(CursorWrapper, "execute", refuse)

    response = auth_client.get("/api/projects/")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.json()["error"]["details"] == {"component": "database"}


def test_redis_outage_is_503_not_500(auth_client, settings):
    # Throttling reads the default cache on every request; point it at a port nothing listens on.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    response = auth_client.get("/api/projects/")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.json()["error"]["details"] == {"component": "cache"}

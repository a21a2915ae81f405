from __future__ import annotations

import pytest
from django.db import OperationalError

from comicmem_site.celery import app
from memory_app.providers import fonts

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
        "font": True,
    }
    sha256 = fonts.renderer_identity().font_sha256 or ""
    assert data["components"]["font"]["detail"].endswith(
        f"NotoSansCJKtc-Regular.otf (sha256 {sha256[:12]}) covers the CJK sample."
    )


def test_a_missing_lettering_font_degrades_health_without_failing_it(api_client, monkeypatch):
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "comicmem_no_such_font_package")

    response = api_client.get("/api/health/")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "degraded"
    assert data["degraded"] == ["font"]
    assert data["components"]["font"]["ok"] is False
    assert "is not installed" in data["components"]["font"]["detail"]
    assert data["components"]["database"]["ok"] is True


def test_a_required_component_down_is_503_even_when_the_font_is_missing_too(api_client, monkeypatch):
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "comicmem_no_such_font_package")
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")

    response = api_client.get("/api/health/")

    assert response.status_code == 503
    details = response.json()["error"]["details"]
    assert details["unavailable"] == ["broker"]
    assert details["components"]["font"]["ok"] is False


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


@pytest.fixture
def paused_redis(tmp_path):
    """A private redis-server (never the shared one); ``pause()`` stops it with SIGSTOP for at most 10 s, as a
    Redis busy or frozen would be: connections are accepted, nothing is answered."""
    import os
    import signal
    import threading

    from tests.faults.servers import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    resumed = threading.Event()
    timer = threading.Timer(10, lambda: resume())
    timer.daemon = True

    def resume() -> None:
        timer.cancel()
        if not resumed.is_set():
            resumed.set()
            os.kill(server.process.pid, signal.SIGCONT)

    def pause() -> None:
        os.kill(server.process.pid, signal.SIGSTOP)
        timer.start()

    server.pause, server.resume = pause, resume
    yield server
    resume()
    server.stop()


def test_a_paused_redis_is_a_quick_503_naming_broker_and_cache(api_client, settings, monkeypatch, paused_redis):
    import time

    # The production shape: the broker and the cache on one Redis, with the cache's socket timeouts of production.
    monkeypatch.setattr(app.conf, "broker_url", paused_redis.url)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": paused_redis.url,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    assert api_client.get("/api/health/").status_code == 200
    paused_redis.pause()

    started = time.monotonic()
    response = api_client.get("/api/health/")
    elapsed = time.monotonic() - started

    assert elapsed < 3  # not the pause's 10 s
    assert response.status_code == 503
    details = response.json()["error"]["details"]
    assert details["unavailable"] == ["broker", "cache"]
    assert details["components"]["database"]["ok"] is True
    paused_redis.resume()
    assert api_client.get("/api/health/").status_code == 200


def test_checks_stuck_past_the_deadline_are_shared_not_piled_up(monkeypatch):
    """A stalled Redis and a prober calling often: requests that come while a check hangs share it, so the checks
    in flight (threads, connections) stay one of each kind however many requests arrive."""
    import threading
    import time

    from memory_app.services import health

    calls = {"cache": 0, "broker": 0}
    release = threading.Event()

    def stalled(name):
        def check():
            calls[name] += 1
            release.wait(10)
            return health.ComponentHealth(name, True, "late")

        return check

    monkeypatch.setattr(health, "_cache", stalled("cache"))
    monkeypatch.setattr(health, "_broker", stalled("broker"))
    monkeypatch.setattr(health, "_database", lambda: health.ComponentHealth("database", True, "test"))
    monkeypatch.setattr(health, "_in_flight", {})
    answers = []
    try:
        threads = [threading.Thread(target=lambda: answers.append(health.health_check())) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=5)
    finally:
        release.set()
        time.sleep(0.1)

    assert len(answers) == 8
    assert calls == {"cache": 1, "broker": 1}
    for answer in answers:
        assert {item.name: item.ok for item in answer} == {
            "database": True,
            "font": True,
            "broker": False,
            "cache": False,
        }

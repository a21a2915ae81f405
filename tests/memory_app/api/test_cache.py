from __future__ import annotations

import pytest

from memory_app.models import CacheEntry, HistoryAction, HistoryRecord
from memory_app.selectors.cache import human_size
from memory_app.services.cache import cache_get, cache_lookup, cache_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def namespaces(cache_namespaces):
    cache_namespaces(
        text_analysis={"backend": "memory", "ttl": 1800, "max_size": 100},
        images={"backend": "file", "ttl": 86400, "directory": "cache/ai_images", "max_disk_usage": 10 * 1024**3},
    )


def test_stats_for_every_namespace(staff_client, namespaces):
    cache_set(namespace="text_analysis", key="a", value="x" * 98)  # 1 + 100 bytes
    for _ in range(5):
        cache_get(namespace="text_analysis", key="a")
    cache_get(namespace="text_analysis", key="missing")
    cache_set(namespace="images", key="img", value=b"p" * 3000, content_type="image/png")
    cache_get(namespace="images", key="img")

    response = staff_client.get("/api/memory/cache/stats")

    assert response.status_code == 200
    assert response.json()["data"] == {
        "caches": {
            "text_analysis": {
                "backend": "memory",
                "hit_rate": "83.3%",
                "hit_rate_value": 0.8333,
                "hits": 5,
                "misses": 1,
                "corrupted": 0,
                "evictions": 0,
                "current_size": 1,
                "max_size": 100,
                "ttl_seconds": 1800,
                "memory_usage": "101B",
                "memory_usage_bytes": 101,
            },
            "images": {
                "backend": "file",
                "hit_rate": "100.0%",
                "hit_rate_value": 1.0,
                "hits": 1,
                "misses": 0,
                "corrupted": 0,
                "evictions": 0,
                "current_size": 1,
                "max_size": None,
                "ttl_seconds": 86400,
                "memory_usage": "2.9KB",
                "memory_usage_bytes": 3000,
                "disk_usage_bytes": 3000,
                "max_disk_usage_bytes": 10737418240,
            },
        }
    }


def test_stats_of_an_unused_cache(staff_client, namespaces):
    data = staff_client.get("/api/memory/cache/stats/").json()["data"]["caches"]["text_analysis"]
    assert (data["hit_rate"], data["hit_rate_value"], data["current_size"], data["memory_usage"]) == (
        "0.0%",
        0.0,
        0,
        "0B",
    )


def test_stats_need_authentication(api_client, namespaces):
    response = api_client.get("/api/memory/cache/stats")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_stats_are_for_staff(auth_client, namespaces):
    # Every user's lookups counted together: system-wide figures, like /api/memory/metrics.
    cache_get(namespace="text_analysis", key="missing")

    response = auth_client.get("/api/memory/cache/stats")

    assert response.status_code == 403
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert "misses" not in response.content.decode()


def test_staff_clear_a_namespace(staff_client, staff_user, namespaces):
    cache_set(namespace="images", key="a", value=b"a")
    cache_set(namespace="images", key="b", value=b"b")
    cache_set(namespace="text_analysis", key="a", value=1)

    response = staff_client.delete("/api/memory/cache/images")

    assert response.status_code == 200
    assert response.json()["data"] == {"cache_type": "images", "cleared": True, "entries_removed": 2}
    assert CacheEntry.objects.count() == 0
    assert cache_get(namespace="text_analysis", key="a") == 1
    record = HistoryRecord.objects.get()
    assert (record.action, record.project_id, record.user_id) == (HistoryAction.CACHE_CLEARED, None, staff_user.pk)
    assert record.details == {"cache_type": "images", "backend": "file", "entries_removed": 2}


def test_others_may_not_clear(auth_client, namespaces):
    cache_set(namespace="text_analysis", key="a", value=1)
    response = auth_client.delete("/api/memory/cache/text_analysis/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert cache_lookup(namespace="text_analysis", key="a").hit is True
    assert HistoryRecord.objects.count() == 0


@pytest.mark.parametrize("cache_type", ["nope", "..", "%2e%2e", "images%00", "IMAGES"])
def test_unknown_namespace_is_a_404(staff_client, namespaces, cache_root, cache_type):
    response = staff_client.delete(f"/api/memory/cache/{cache_type}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] in {"MEMORY_NOT_FOUND", "NOT_FOUND"}
    if error["code"] == "MEMORY_NOT_FOUND":
        assert error["details"]["suggestion"] == "Use one of: images, text_analysis."
    assert HistoryRecord.objects.count() == 0
    assert list(cache_root.iterdir()) == []


def test_unknown_namespace_names_itself(staff_client, namespaces):
    response = staff_client.delete("/api/memory/cache/nope")
    assert response.json()["error"] == {
        "code": "MEMORY_NOT_FOUND",
        "message": "Cache namespace 'nope' does not exist.",
        "details": {"cache_type": "nope", "suggestion": "Use one of: images, text_analysis."},
    }


def test_get_on_a_namespace_is_not_allowed(staff_client, namespaces):
    assert staff_client.get("/api/memory/cache/images").status_code == 405


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0KB"),
        (2411724, "2.3MB"),
        (10 * 1024**3, "10.0GB"),
        (5 * 1024**5, "5120.0TB"),
    ],
)
def test_human_size(size, text):
    assert human_size(size) == text

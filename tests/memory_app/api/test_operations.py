"""GET /api/memory/metrics (§9.1), GET /api/memory/analysis (§9.2) and the Prometheus endpoint /metrics."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys

import psutil
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from memory_app.errors import ServiceUnavailable
from memory_app.models import ConversationContext, MetricSnapshot, WorkflowState
from memory_app.selectors.operations import cache_performance
from memory_app.services import workflow as state
from memory_app.services.cache import cache_lookup, cache_set
from memory_app.services.conversation import context_create
from tests.conftest import REPO_ROOT, subprocess_env
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def namespaces(cache_namespaces):
    cache_namespaces(
        text_analysis={"backend": "memory", "ttl": 1800, "max_size": 4},
        api_responses={"backend": "memory", "ttl": 300, "max_size": 500},
    )


def set_memory(settings, section: str, **values) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={section: getattr(settings.MEMORY, section).model_copy(update=values)}
    )


# --- /api/memory/metrics ----------------------------------------------------------------------------------------


def test_metrics_are_for_staff(api_client, auth_client):
    assert api_client.get("/api/memory/metrics").status_code == 401
    response = auth_client.get("/api/memory/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"


def test_metrics_report_memory_caches_contexts_and_runs(staff_client, namespaces, user, project):
    cache_set(namespace="text_analysis", key="a", value="x")
    for _ in range(3):
        cache_lookup(namespace="text_analysis", key="a")
    cache_lookup(namespace="text_analysis", key="missing")
    context_create(owner=user)
    stale = context_create(owner=user)
    ConversationContext.objects.filter(pk=stale.pk).update(last_updated=timezone.now() - dt.timedelta(days=2))
    state.workflow_create(workflow_type="t", project=project, owner=user, steps=["a"], data={}, preferences={})

    response = staff_client.get("/api/memory/metrics/")

    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"timestamp", "memory_usage", "cache_performance", "active_contexts", "workflow_states"}
    assert data["memory_usage"]["total"] == psutil.virtual_memory().total
    assert 0 < data["memory_usage"]["used"] <= data["memory_usage"]["total"]
    text = data["cache_performance"]["text_analysis"]
    assert (text["hit_rate"], text["total_requests"]) == (75.0, 4)
    assert text["avg_latency_ms"] > 0
    assert data["cache_performance"]["api_responses"] == {"hit_rate": 0.0, "avg_latency_ms": 0.0, "total_requests": 0}
    assert data["active_contexts"] == 1
    assert data["workflow_states"] == {
        "pending": 0,
        "in_progress": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "awaiting_input": 0,
    }


# --- /api/memory/analysis ---------------------------------------------------------------------------------------


def snapshot(at: dt.datetime, cache: dict, percentage: float = 40.0) -> MetricSnapshot:
    return MetricSnapshot.objects.create(
        taken_at=at,
        memory_total=1000,
        memory_used=int(percentage * 10),
        memory_percentage=percentage,
        active_contexts=0,
        cache=cache,
    )


def test_analysis_finds_peaks_hot_data_and_gives_figured_advice(staff_client, namespaces, project, other_user):
    busy = ProjectFactory(id="proj-busy", owner=other_user)
    for _ in range(3):
        HistoryRecordFactory(project=busy, timestamp=timezone.now() - dt.timedelta(hours=1))
    HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(hours=1))
    HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(days=3))  # outside the window
    base = (timezone.now() - dt.timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    first_hour, second_hour = base.hour, (base + dt.timedelta(hours=1)).hour
    snapshot(
        base, {"text_analysis": {"hits": 0, "misses": 0, "current_size": 0}, "api_responses": {"hits": 0, "misses": 0}}
    )
    snapshot(
        base + dt.timedelta(minutes=30),
        {"text_analysis": {"hits": 5, "misses": 35, "current_size": 4}, "api_responses": {"hits": 9, "misses": 1}},
    )
    snapshot(
        base + dt.timedelta(hours=1, minutes=30),
        {
            "text_analysis": {"hits": 10, "misses": 50, "current_size": 4},
            "api_responses": {"hits": 30, "misses": 12, "current_size": 7},
        },
    )

    response = staff_client.get("/api/memory/analysis?hours=24")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["snapshots"] == 3
    assert data["peak_usage_hours"] == [{"hour": second_hour, "lookups": 52}, {"hour": first_hour, "lookups": 50}]
    assert data["most_accessed_data"] == {
        "cache_namespaces": [
            {"namespace": "text_analysis", "lookups": 60},
            {"namespace": "api_responses", "lookups": 42},
        ],
        "projects": [
            {"project_id": "proj-busy", "owner": "bob", "actions": 3},
            {"project_id": "proj-001", "owner": "alice", "actions": 1},
        ],
    }
    assert data["cache_efficiency"] == {
        "text_analysis": {"hits": 10, "misses": 50, "lookups": 60, "hit_rate": 0.1667},
        "api_responses": {"hits": 30, "misses": 12, "lookups": 42, "hit_rate": 0.7143},
    }
    # text_analysis is full (4 of max_size 4) and misses: the advice is a larger max_size, with its figures.
    assert data["recommendations"] == [
        {
            "namespace": "text_analysis",
            "kind": "low_hit_rate",
            "message": "text_analysis: hit rate 17% over 60 lookups with the namespace full (4/4); "
            "double max_size to 8.",
            "evidence": {
                "hit_rate": 0.1667,
                "lookups": 60,
                "threshold": 0.5,
                "ttl_seconds": 1800,
                "max_size": 4,
                "current_size": 4,
            },
            "setting": "cache.text_analysis.max_size",
            "current": 4,
            "suggested": 8,
        }
    ]


def test_a_namespace_with_room_gets_a_ttl_suggestion_and_a_reset_counter_counts_from_zero(staff_client, namespaces):
    base = timezone.now() - dt.timedelta(hours=2)
    snapshot(base, {"api_responses": {"hits": 100, "misses": 100, "current_size": 3}})
    # The counters went down (a Redis flush): the second pair counts from zero.
    snapshot(base + dt.timedelta(minutes=5), {"api_responses": {"hits": 2, "misses": 30, "current_size": 3}})

    data = staff_client.get("/api/memory/analysis").json()["data"]

    assert data["cache_efficiency"]["api_responses"]["lookups"] == 32
    [advice] = data["recommendations"]
    assert (advice["setting"], advice["current"], advice["suggested"]) == ("cache.api_responses.ttl", 300, 600)
    assert advice["message"] == (
        "api_responses: hit rate 6% over 32 lookups with room left (3/500); entries expire first: "
        "raise ttl from 300 s to 600 s."
    )


def test_no_snapshot_means_no_pattern_and_no_advice(staff_client, namespaces):
    data = staff_client.get("/api/memory/analysis").json()["data"]

    assert (data["snapshots"], data["peak_usage_hours"], data["recommendations"]) == (0, [], [])


@pytest.mark.parametrize("hours", ["0", "abc", "-1", "721", "1.5", "²", "", "99999999999999999999999"])
def test_a_bad_window_is_a_400(staff_client, hours):
    response = staff_client.get(f"/api/memory/analysis?hours={hours}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "hours" in response.json()["error"]["details"]["fields"]


def test_analysis_is_for_staff(auth_client):
    assert auth_client.get("/api/memory/analysis").status_code == 403


# --- /metrics ---------------------------------------------------------------------------------------------------


SCRAPE_TOKEN = "scrape-token-for-tests"


@pytest.fixture(autouse=True)
def scrape_token(settings) -> None:
    set_memory(settings, "monitoring", metrics_token=SCRAPE_TOKEN)


def scrape(client, **extra) -> dict:
    extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {SCRAPE_TOKEN}")
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_per_route_name_never_per_path(client, auth_client, project):
    before = scrape(client)
    auth_client.get("/api/memory/history/proj-001")
    auth_client.get("/api/memory/history/proj-404")

    after = scrape(client)

    ok = {"route": "history", "method": "GET", "status": "200"}
    missing = {"route": "history", "method": "GET", "status": "404"}
    assert value(after, "comicmem_http_requests_total", **ok) == value(before, "comicmem_http_requests_total", **ok) + 1
    assert value(after, "comicmem_http_requests_total", **missing) == (
        value(before, "comicmem_http_requests_total", **missing) + 1
    )
    latency = {"route": "history", "method": "GET"}
    assert value(after, "comicmem_http_request_duration_seconds_count", **latency) == (
        value(before, "comicmem_http_request_duration_seconds_count", **latency) + 2
    )
    assert not any("proj-" in str(labels) for _, labels in after)


def test_cache_hits_and_misses_come_from_the_cache_layer_counters(client, namespaces):
    cache_set(namespace="text_analysis", key="a", value="x")
    cache_lookup(namespace="text_analysis", key="a")
    cache_lookup(namespace="text_analysis", key="b")
    cache_lookup(namespace="text_analysis", key="c")

    samples = scrape(client)

    assert value(samples, "comicmem_cache_hits_total", namespace="text_analysis") == 1
    assert value(samples, "comicmem_cache_misses_total", namespace="text_analysis") == 2
    assert samples[("comicmem_cache_misses_total", (("namespace", "api_responses"),))] == 0


def test_queue_depth_counts_the_filesystem_queue(client, settings, tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}_0f3a.celery.msg").write_text("{}")
    (folder / "9_0f3b.images.msg").write_text("{}")
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(folder),
    }

    samples = scrape(client)

    assert value(samples, "comicmem_queue_depth", queue="celery") == 3
    assert value(samples, "comicmem_queue_depth", queue="images") == 1


def test_queue_depth_on_redis_is_the_list_length(client, settings, redis_url):
    import redis

    connection = redis.Redis.from_url(redis_url)
    connection.delete("celery")
    connection.rpush("celery", "a", "b")
    settings.CELERY_BROKER_URL = redis_url
    try:
        assert value(scrape(client), "comicmem_queue_depth", queue="celery") == 2
    finally:
        connection.delete("celery")


def test_values_written_by_another_process_are_summed(client, user, project):
    before = scrape(client)
    from memory_app.instruments import step_observe

    step_observe(workflow_type="elsewhere", step="draw", seconds=0.2, outcome="done")
    code = (
        "from memory_app.instruments import step_observe\n"
        "step_observe(workflow_type='elsewhere', step='draw', seconds=3.0, outcome='done')\n"
        "step_observe(workflow_type='elsewhere', step='draw', seconds=1.0, outcome='failed')\n"
    )
    # The child inherits PROMETHEUS_MULTIPROC_DIR from this process's environment, as a worker does.
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), check=True)
    run = state.workflow_create(workflow_type="t", project=project, owner=user, steps=["a"], data={}, preferences={})
    WorkflowState.objects.filter(pk=run.pk).update(stuck_since=timezone.now())

    after = scrape(client)

    done = {"workflow_type": "elsewhere", "step": "draw", "outcome": "done"}
    assert value(after, "comicmem_workflow_step_duration_seconds_count", **done) == (
        value(before, "comicmem_workflow_step_duration_seconds_count", **done) + 2
    )
    assert value(after, "comicmem_workflow_step_duration_seconds_sum", **done) == pytest.approx(
        value(before, "comicmem_workflow_step_duration_seconds_sum", **done) + 3.2
    )
    final = {"workflow_type": "elsewhere", "step": "draw", "final": "true"}
    assert value(after, "comicmem_workflow_step_failures_total", **final) == (
        value(before, "comicmem_workflow_step_failures_total", **final) + 1
    )
    assert value(after, "comicmem_workflow_runs", status="in_progress") == 1
    assert value(after, "comicmem_workflow_runs_stuck") == 1


def test_from_elsewhere_a_scrape_needs_credentials(client, settings, staff_user):
    set_memory(settings, "monitoring", metrics_password="s3cret")
    remote = {"REMOTE_ADDR": "10.1.2.3"}

    refused = client.get("/metrics", **remote)
    assert (refused.status_code, refused["WWW-Authenticate"]) == (401, 'Basic realm="metrics"')
    assert refused.content == b"Authentication required.\n"
    proxied = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 401

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()

    assert client.get("/metrics", HTTP_AUTHORIZATION=basic("wrong"), **remote).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic !!!", **remote).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=basic("s3cret"), **remote).status_code == 200
    client.force_login(staff_user)
    assert client.get("/metrics", **remote).status_code == 200


def test_without_credentials_only_staff_may_scrape(client, user):
    client.force_login(user)
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert client.post("/metrics").status_code == 405


def test_loopback_alone_is_no_credential(client, settings, user, staff_user):
    # Behind a reverse proxy on the same host every request arrives from 127.0.0.1, most without X-Forwarded-For.
    for address in ("127.0.0.1", "::1"):
        refused = client.get("/metrics", REMOTE_ADDR=address)
        assert (refused.status_code, refused["WWW-Authenticate"]) == (401, 'Basic realm="metrics"')
        assert refused.content == b"Authentication required.\n"
    client.force_login(user)
    assert client.get("/metrics").status_code == 401
    client.force_login(staff_user)
    assert client.get("/metrics").status_code == 200


def test_a_scraper_may_send_the_metrics_token_as_a_bearer(client, settings):
    remote = {"REMOTE_ADDR": "10.1.2.3"}

    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}", **remote).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {SCRAPE_TOKEN}").status_code == 200
    for wrong in ("Bearer wrong", "Bearer ", f"Token {SCRAPE_TOKEN}", f"Bearer {SCRAPE_TOKEN}x", "Bearer é"):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 401, wrong
    # Unset, no bearer is accepted (not even an empty one).
    set_memory(settings, "monitoring", metrics_token=None)
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_a_database_outage_leaves_the_process_metrics_scrapeable(client, monkeypatch):
    from django.db import OperationalError

    from memory_app.selectors import operations as selectors

    def down() -> dict:
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "workflow_status_counts", down)

    samples = scrape(client)

    assert ("comicmem_workflow_runs_stuck", ()) not in samples
    assert any(name == "comicmem_http_requests_total" for name, _ in samples)


@pytest.fixture
def redis_down(settings):
    from django.core.cache import caches

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    yield
    caches["default"].close()


def test_an_unreachable_shared_cache_is_a_503_in_the_json_and_no_cache_series_in_a_scrape(
    staff_client, client, namespaces, redis_down
):
    response = staff_client.get("/api/memory/metrics")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    # (Throttling, which also uses the shared cache, may be the first to find it down.)

    with pytest.raises(ServiceUnavailable) as raised:
        cache_performance()
    assert raised.value.details == {"service": "cache", "reason": "ConnectionError"}

    samples = scrape(client)

    assert not [name for name, _ in samples if name.startswith("comicmem_cache_hits")]
    assert ("comicmem_workflow_runs_stuck", ()) in samples

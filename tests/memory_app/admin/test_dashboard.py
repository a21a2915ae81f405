"""The staff dashboard: cache hit rate and size and runs per status over time, from the metric snapshots."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from memory_app.models import MetricSnapshot

pytestmark = pytest.mark.django_db


def snapshot(taken_at, hits, misses, entries, states) -> MetricSnapshot:
    return MetricSnapshot.objects.create(
        taken_at=taken_at,
        memory_total=100,
        memory_used=50,
        memory_percentage=50.0,
        active_contexts=1,
        cache={
            "images": {"hits": hits, "misses": misses, "current_size": entries, "memory_usage_bytes": entries * 1024}
        },
        workflow_states=states,
    )


def test_the_dashboard_draws_hit_rate_size_and_runs_over_time(admin_client):
    now = timezone.now()
    snapshot(now - dt.timedelta(hours=3), 0, 0, 0, {"completed": 1, "failed": 0})
    snapshot(now - dt.timedelta(hours=2), 3, 2, 4, {"completed": 2, "failed": 1})
    # The counters went down (a Redis flush): the interval counts from zero.
    snapshot(now - dt.timedelta(hours=1), 1, 1, 5, {"completed": 4, "failed": 1})
    snapshot(now - dt.timedelta(days=3), 0, 0, 0, {"completed": 0})  # outside the default 24 h

    page = admin_client.get("/admin/memory_app/metricsnapshot/dashboard/").content.decode()

    def values(chart: str, series: str) -> list[str]:
        block = page.split(f'id="{chart}"')[1].split("</svg>")[0]
        group = block.split(f'data-series="{series}"')[1].split("</g>")[0]
        return re.findall(r'data-value="([\d.]+)"', group)

    assert "From 3 metric snapshots" in page
    assert values("hit-rate-chart", "images") == ["0.6", "0.5"]
    assert values("entries-chart", "images") == ["0.0", "4.0", "5.0"]
    assert values("runs-chart", "completed") == ["1.0", "2.0", "4.0"]
    assert values("runs-chart", "failed") == ["0.0", "1.0", "1.0"]
    assert 'id="cache-statistics"' in page


def test_the_dashboard_is_linked_from_the_index_and_takes_only_its_windows(admin_client, client, user):
    index = admin_client.get("/admin/").content.decode()
    week = admin_client.get("/admin/memory_app/metricsnapshot/dashboard/?hours=168").content.decode()
    junk = admin_client.get("/admin/memory_app/metricsnapshot/dashboard/?hours=-5x")
    client.force_login(user)
    refused = client.get("/admin/memory_app/metricsnapshot/dashboard/")

    assert 'href="/admin/memory_app/metricsnapshot/dashboard/"' in index
    assert "<strong>168 h</strong>" in week
    assert junk.status_code == 200 and "<strong>24 h</strong>" in junk.content.decode()
    assert "No snapshot in this window." in junk.content.decode()
    assert refused.status_code == 302

"""Admin views of operations: stuck runs filter, metric snapshots (read-only), maintenance schedules."""

from __future__ import annotations

import pytest
from django.utils import timezone

from memory_app.models import MetricSnapshot, WorkflowState
from memory_app.services import workflow as state

pytestmark = pytest.mark.django_db


def test_the_run_list_filters_stuck_runs(admin_client, user, project):
    stuck = state.workflow_create(workflow_type="t", project=project, owner=user, steps=["a"], data={}, preferences={})
    calm = state.workflow_create(workflow_type="t", project=project, owner=user, steps=["a"], data={}, preferences={})
    WorkflowState.objects.filter(pk=stuck.pk).update(stuck_since=timezone.now())

    page = admin_client.get("/admin/memory_app/workflowstate/?stuck_since__isempty=0").content.decode()

    assert str(stuck.pk) in page
    assert str(calm.pk) not in page


def test_snapshots_are_listed_and_read_only(admin_client):
    snapshot = MetricSnapshot.objects.create(
        taken_at=timezone.now(), memory_total=100, memory_used=42, memory_percentage=42.0, active_contexts=3
    )

    assert admin_client.get("/admin/memory_app/metricsnapshot/").status_code == 200
    assert admin_client.get(f"/admin/memory_app/metricsnapshot/{snapshot.pk}/change/").status_code == 200
    assert admin_client.get("/admin/memory_app/metricsnapshot/add/").status_code == 403
    response = admin_client.post(f"/admin/memory_app/metricsnapshot/{snapshot.pk}/change/", {"active_contexts": 9})
    assert response.status_code == 403
    snapshot.refresh_from_db()
    assert snapshot.active_contexts == 3


def test_staff_can_edit_a_schedule_in_the_admin(admin_client):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval = IntervalSchedule.objects.create(every=42, period="seconds")
    task = PeriodicTask.objects.create(name="probe", task="memory_app.metrics_snapshot", interval=interval)

    assert admin_client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/").status_code == 200

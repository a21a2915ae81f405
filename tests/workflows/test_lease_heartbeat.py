"""The lease heartbeat: one thread per process renews the lease of every unit the process holds while its step runs,
and stops renewing a unit once its step is over (released) or its claim is gone."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from memory_app.models import UnitStatus, WorkflowUnit
from workflows import engine
from workflows.engine import units


def limit(settings, **values: Any) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update=values)}
    )


def claimed(user, project) -> WorkflowUnit:
    run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run)
    claim = units.workflow_unit_claim(unit_id=unit.pk, lease_owner="test")
    assert claim is not None
    return claim


def lease_end(unit: WorkflowUnit):
    return WorkflowUnit.objects.values_list("lease_expires_at", flat=True).get(pk=unit.pk)


@pytest.fixture
def no_messages(transactional_db, monkeypatch) -> None:
    from workflows import tasks

    monkeypatch.setattr(tasks.run_unit, "apply_async", lambda *args, **kwargs: None)


def test_one_thread_renews_every_held_unit_until_it_is_released(no_messages, user, project, settings):
    limit(settings, lease_seconds=1.5)  # a beat every 0.5 s
    first, second = claimed(user, project), claimed(user, project)

    with engine.LeaseHeartbeat(first), engine.LeaseHeartbeat(second):
        WorkflowUnit.objects.filter(pk__in=[first.pk, second.pk]).update(lease_expires_at=timezone.now())
        time.sleep(1.2)
        renewed = [lease_end(first), lease_end(second)]
        # One heartbeat thread for the process, however many units it holds.
        assert [thread.name for thread in threading.enumerate()].count("lease-heartbeat") == 1
    assert all(end > timezone.now() + timedelta(seconds=0.5) for end in renewed)

    WorkflowUnit.objects.filter(pk__in=[first.pk, second.pk]).update(lease_expires_at=timezone.now())
    time.sleep(1.2)
    assert lease_end(first) <= timezone.now() and lease_end(second) <= timezone.now()


def test_a_unit_whose_claim_is_gone_is_no_longer_renewed(no_messages, user, project, settings):
    limit(settings, lease_seconds=1.5)
    unit = claimed(user, project)

    with engine.LeaseHeartbeat(unit):
        WorkflowUnit.objects.filter(pk=unit.pk).update(status=UnitStatus.PENDING, lease_expires_at=timezone.now())
        time.sleep(1.2)
        assert lease_end(unit) <= timezone.now()

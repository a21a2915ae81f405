"""The worker's PostgreSQL connections terminated in the middle of a fan-out (what a database restart, a failover
or a pgbouncer recycle does to them): each unit hit retries on a fresh connection and the run completes, every
unit done once and every effect (step effects, history records, snapshots) written once.

Only the connections to this test's own database are terminated, never the test's own one.
"""

from __future__ import annotations

import os

import pytest
from django.db import connection

from memory_app.models import UnitStatus, WorkflowState, WorkflowUnit
from tests.conftest import REQUIRE_SERVICES
from tests.integration.test_workflow_worker import FAST, actions, broker, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEGMENTS = ["a", "b", "c", "d", "e", "f", "g", "h"]


@pytest.fixture
def effects_rows(transactional_db) -> None:
    if connection.vendor != "postgresql":
        if REQUIRE_SERVICES and os.environ.get("COMICMEM_SQLITE_PASS") != "1":
            pytest.fail("required in CI: terminating connections needs PostgreSQL (set TEST_DATABASE_URL)")
        pytest.skip("needs PostgreSQL: set TEST_DATABASE_URL=postgres://… (this run uses SQLite)")
    effects_table_create()


def terminate_the_workers_connections() -> int:
    """Terminate every other session on this test's database (the worker's), as a database restart would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_fan_out_completes_when_the_workers_database_connections_are_terminated(
    start_worker, effects_rows, user, project, redis_url
):
    def render_done() -> int:
        return WorkflowUnit.objects.filter(workflow=run, step="render", status=UnitStatus.DONE).count()

    with broker(redis_url):
        start_worker(broker_url=redis_url, concurrency=2, **FAST)
        run = engine.workflow_start(
            user=user,
            workflow_type="fan_out",
            project_id="proj-001",
            data={"text": " ".join(SEGMENTS), "faults": {"render": {"sleep": 1}}},
        )
        terminated = []
        for done in (1, 4):
            wait_for(lambda done=done: render_done() >= done or status_of(run) != "in_progress", what=f"{done} done")
            terminated.append(terminate_the_workers_connections())
        assert render_done() < len(SEGMENTS)
        wait_for(lambda: status_of(run) != "in_progress", timeout=90, what="the end of the run")

    run = WorkflowState.objects.get(pk=run.pk)
    assert (run.status, run.error) == ("completed", None)
    assert min(terminated) >= 2  # both pool processes' connections, at least, each time
    assert run.data["pages"] == [f"<{segment}>" for segment in SEGMENTS]
    units = WorkflowUnit.objects.filter(workflow=run)
    assert list(units.order_by("id").values_list("step", "unit_index", "status")) == (
        [("split", 0, "done")] + [("render", index, "done") for index in range(len(SEGMENTS))] + [("bind", 0, "done")]
    )
    # The units whose connection was cut while they ran were run again: the faults did hit the run.
    assert max(units.values_list("attempts", flat=True)) >= 2
    assert effects(str(run.pk)) == sorted(
        [f"{run.pk}:split:0", f"{run.pk}:bind:0"] + [f"{run.pk}:render:{index}" for index in range(len(SEGMENTS))]
    )
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]
    assert list(run.snapshots.order_by("sequence").values_list("event", flat=True)) == [
        "started",
        "step_completed",
        "step_completed",
        "step_completed",
        "completed",
    ]

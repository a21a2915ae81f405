"""The broker (a private redis-server, never the shared one) restarted in the middle of a run, losing every
message it held: the run still completes, or is flagged stuck; it is never silently lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memory_app.models import UnitStatus, WorkflowState, WorkflowUnit
from tests.faults.servers import PrivateRedis
from tests.integration.test_workflow_worker import FAST, actions, broker, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEGMENTS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


def test_a_run_completes_after_its_broker_restarts(start_worker, effects_rows, private_redis, user, project):
    def render_done() -> int:
        return WorkflowUnit.objects.filter(workflow=run, step="render", status=UnitStatus.DONE).count()

    with broker(private_redis.url):
        worker = start_worker(broker_url=private_redis.url, **FAST)
        run = engine.workflow_start(
            user=user,
            workflow_type="fan_out",
            project_id="proj-001",
            data={"text": " ".join(SEGMENTS), "faults": {"render": {"sleep": 0.8}}},
        )
        wait_for(lambda: render_done() >= 2, timeout=120, what="two segments")
        private_redis.stop()  # every queued message and the recovery's own schedule are gone
        private_redis.start()
        assert render_done() < len(SEGMENTS)
        wait_for(lambda: status_of(run) == "completed", timeout=120, what="completion after the restart")

    run = WorkflowState.objects.get(pk=run.pk)
    assert run.data["pages"] == [f"<{segment}>" for segment in SEGMENTS]
    render_effects = [key for key in effects(str(run.pk)) if ":render:" in key]
    assert sorted(render_effects) == [f"{run.pk}:render:{index}" for index in range(len(SEGMENTS))]
    assert effects(str(run.pk)).count(f"{run.pk}:bind:0") == 1
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]
    assert worker.process.poll() is None  # the same worker carried on

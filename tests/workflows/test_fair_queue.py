"""Per-user fairness: at most workflow.max_active_runs_per_user runs of one user are in progress; the next ones
wait, queued, and start oldest first as that user's runs end; past max_unfinished_runs_per_user a new run is a
429 that creates nothing. Another user's run is never held back by someone else's backlog."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from django.db import connection, transaction

from memory_app.errors import WorkflowLimitReached
from memory_app.models import HistoryRecord, WorkflowState, WorkflowUnit
from memory_app.services import workflow as state
from memory_app.services.history import history_record
from memory_app.services.workflow import QUEUED_DESCRIPTION
from tests.factories import ProjectFactory
from workflows import engine
from workflows.engine import steps

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    def configure(active: int, unfinished: int) -> None:
        workflow = settings.MEMORY.workflow.model_copy(
            update={"max_active_runs_per_user": active, "max_unfinished_runs_per_user": unfinished}
        )
        settings.MEMORY = settings.MEMORY.model_copy(update={"workflow": workflow})

    return configure


def post(client, project_id: str = "proj-001"):
    return client.post(
        "/api/workflows/",
        {"workflow_type": "three_steps", "project_id": project_id, "input": {"text": "a b"}},
        format="json",
    )


def counts() -> tuple[int, int, int]:
    return WorkflowState.objects.count(), WorkflowUnit.objects.count(), HistoryRecord.objects.count()


def started_order(run: WorkflowState) -> int:
    return HistoryRecord.objects.get(workflow_id=run.pk, action="workflow_started").pk


def completed_order(run: WorkflowState) -> int:
    return HistoryRecord.objects.get(workflow_id=run.pk, action="workflow_completed").pk


def test_runs_past_the_active_limit_are_queued_and_past_the_cap_refused(
    auth_client, other_client, other_user, project, limits, django_capture_on_commit_callbacks, monkeypatch
):
    limits(active=2, unfinished=3)
    ProjectFactory(id="theirs", owner=other_user)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        bodies = [post(auth_client).json()["data"] for _ in range(3)]

    assert [body["status"] for body in bodies] == ["in_progress", "in_progress", "pending"]
    assert [body["queued_at"] is None for body in bodies] == [True, True, False]
    assert bodies[2]["progress"]["description"] == QUEUED_DESCRIPTION
    assert len(sent) == 2  # the two first steps; the queued run has no unit and no message
    assert WorkflowUnit.objects.filter(workflow_id=bodies[2]["workflow_id"]).count() == 0
    assert not HistoryRecord.objects.filter(workflow_id=bodies[2]["workflow_id"]).exists()
    before = counts()
    # The input of a refused run is not even checked (a comic's prepare may download its previous_context).
    prepared: list[object] = []
    three_steps = engine.workflow_type_get("three_steps")
    spy = replace(three_steps, prepare=lambda request: prepared.append(request) or (request.data, request.preferences))
    monkeypatch.setitem(steps._REGISTRY, "three_steps", spy)

    with django_capture_on_commit_callbacks(execute=False) as refused_sent:
        refused = post(auth_client)

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "WORKFLOW_LIMIT_REACHED"
    assert error["details"] == {"limit": 3, "in_progress": 2, "queued": 1}
    assert counts() == before
    assert refused_sent == []
    assert prepared == []
    # Another user's run starts at once, whatever this user's backlog.
    theirs = post(other_client, "theirs")
    assert theirs.status_code == 202
    assert theirs.json()["data"]["status"] == "in_progress"


def test_a_queued_run_starts_when_one_of_its_owners_runs_completes(
    user, project, limits, run_inline, django_capture_on_commit_callbacks
):
    limits(active=1, unfinished=10)
    with django_capture_on_commit_callbacks(execute=False):
        runs = [
            engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "a"})
            for _ in range(3)
        ]
    assert [run.status for run in runs] == ["in_progress", "pending", "pending"]

    first_unit = WorkflowUnit.objects.get(workflow=runs[0])
    run_inline(engine.unit_execute, unit_id=first_unit.pk, lease_owner="test")

    for run in runs:
        run.refresh_from_db()
    assert [run.status for run in runs] == ["completed", "completed", "completed"]
    assert [run.queued_at for run in runs] == [None, None, None]
    # One after the other, in the order they were accepted: each started after the one before it completed.
    assert completed_order(runs[0]) < started_order(runs[1]) < completed_order(runs[1]) < started_order(runs[2])


def test_a_failed_or_cancelled_run_hands_its_place_to_the_next_queued_one(
    user, project, limits, effects_table, django_capture_on_commit_callbacks, tmp_path
):
    limits(active=1, unfinished=10)
    flag = tmp_path / "fail"
    flag.touch()

    def start(data):
        return engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data=data)

    with django_capture_on_commit_callbacks(execute=False):
        failing = start({"text": "a", "faults": {"measure": {"fail_while_exists": str(flag)}}})
        cancelled_later = start({"text": "b"})
        cancelled_queued = start({"text": "c"})
        last = start({"text": "d"})

    with django_capture_on_commit_callbacks(execute=False) as sent:
        engine.unit_execute(unit_id=WorkflowUnit.objects.get(workflow=failing).pk, lease_owner="test")
    for run in (failing, cancelled_later, cancelled_queued, last):
        run.refresh_from_db()
    assert [failing.status, cancelled_later.status, cancelled_queued.status, last.status] == [
        "failed",
        "in_progress",
        "pending",
        "pending",
    ]
    assert len(sent) == 1  # the first unit of the run that took the failed one's place
    assert list(WorkflowUnit.objects.filter(workflow=cancelled_later).values_list("step", flat=True)) == ["measure"]

    # A queued run cancelled: it gives up its turn; nothing starts in its place, nothing of it ever runs.
    engine.workflow_cancel(workflow=cancelled_queued, user=user)
    cancelled_queued.refresh_from_db()
    last.refresh_from_db()
    assert (cancelled_queued.status, cancelled_queued.queued_at, last.status) == ("cancelled", None, "pending")
    assert WorkflowUnit.objects.filter(workflow=cancelled_queued).count() == 0

    # The run in progress cancelled: the next queued one starts, with its first unit sent.
    with django_capture_on_commit_callbacks(execute=False) as sent:
        engine.workflow_cancel(workflow=cancelled_later, user=user)
    last.refresh_from_db()
    assert last.status == "in_progress"
    assert list(WorkflowUnit.objects.filter(workflow=last).values_list("step", flat=True)) == ["measure"]
    assert len(sent) == 2  # the revoke of the cancelled run's unit, the message of the started one


def test_recovery_starts_a_queued_run_whose_turn_came_unseen(user, project, limits, django_capture_on_commit_callbacks):
    limits(active=1, unfinished=10)
    with django_capture_on_commit_callbacks(execute=False):
        first = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "a"})
        queued = engine.workflow_start(
            user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "b"}
        )
    # The run in progress ends without the engine (its project's runs deleted, a crash between the two).
    WorkflowState.objects.filter(pk=first.pk).delete()

    with django_capture_on_commit_callbacks(execute=False) as sent:
        outcome = engine.workflow_recover()

    queued.refresh_from_db()
    assert queued.status == "in_progress"
    assert WorkflowUnit.objects.filter(workflow=queued).count() == 1
    assert len(sent) == 1
    assert outcome == {"requeued": 0, "in_flight": True}


@pytest.mark.django_db(transaction=True)
def test_the_queue_lock_does_not_hold_up_the_commits_of_the_users_other_work(user, project, limits):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    limits(active=1, unfinished=10)
    holding, committed = threading.Event(), threading.Event()
    seen_while_holding: list[bool] = []
    errors: list[BaseException] = []

    def admit_slowly() -> None:
        # An admission holding the owner's queue lock (as while a run is being created).
        try:
            with transaction.atomic():
                state.workflow_queue_admit(owner=user)
                holding.set()
                seen_while_holding.append(committed.wait(timeout=5))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    def record() -> None:
        # A step of another of the user's runs commits its history record: its foreign-key check at commit takes
        # a KEY SHARE lock on the user's row, which FOR UPDATE would make wait for the admission.
        try:
            assert holding.wait(timeout=10)
            with transaction.atomic():
                history_record(project=project, action="workflow_step_completed", user=user)
            committed.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=admit_slowly), threading.Thread(target=record)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert seen_while_holding == [True]  # committed while the admission still held the lock
    assert HistoryRecord.objects.filter(action="workflow_step_completed", user=user).count() == 1


def test_a_queued_run_that_cannot_begin_fails_alone(
    user, project, limits, run_inline, django_capture_on_commit_callbacks
):
    limits(active=1, unfinished=10)
    with django_capture_on_commit_callbacks(execute=False):
        first = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "a"})
        broken = engine.workflow_start(
            user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "b"}
        )
        last = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "c"})
    # Its type is gone (a deploy removed it) while it waited.
    WorkflowState.objects.filter(pk=broken.pk).update(workflow_type="retired_type")

    run_inline(engine.unit_execute, unit_id=WorkflowUnit.objects.get(workflow=first).pk, lease_owner="test")
    for run in (first, broken, last):
        run.refresh_from_db()

    # The run whose ending gave it its place completed all the same; the broken one failed with its error kept.
    assert first.status == "completed"
    assert (broken.status, broken.error["type"]) == ("failed", "ValidationFailed")
    assert "retired_type" in broken.error["message"]
    # Its place is not lost: recovery starts the next one.
    run_inline(engine.workflow_recover)
    last.refresh_from_db()
    assert last.status == "completed"


def test_resume_and_rerun_take_a_place_like_a_new_run(user, project, limits, effects_table, tmp_path, run_inline):
    limits(active=1, unfinished=10)
    flag = tmp_path / "fail"
    flag.touch()
    failing = {"text": "a", "faults": {"measure": {"fail_while_exists": str(flag)}}}
    old = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data=failing)
    run_inline(engine.unit_execute, unit_id=WorkflowUnit.objects.get(workflow=old).pk, lease_owner="test")
    old.refresh_from_db()
    assert old.status == "failed"
    flag.unlink()
    with transaction.atomic():
        busy = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "b"})
    before = counts(), list(WorkflowState.objects.order_by("pk").values_list("status", flat=True))

    # The one place is taken: neither a resume nor a rerun sets the old run going past the limit.
    with pytest.raises(WorkflowLimitReached):
        engine.workflow_resume(workflow=old, user=user)
    with pytest.raises(WorkflowLimitReached):
        engine.workflow_restore(workflow=old, index=0, rerun=True, user=user)

    assert (counts(), list(WorkflowState.objects.order_by("pk").values_list("status", flat=True))) == before
    # Once the other run has ended, the resume goes through.
    WorkflowState.objects.filter(pk=busy.pk).update(status="completed")
    assert engine.workflow_resume(workflow=old, user=user).status == "in_progress"

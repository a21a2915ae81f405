"""The engine driven inline (tasks run eagerly after commit): steps, fan-out, retries, resume, fork, cancel."""

from __future__ import annotations

from datetime import timedelta

import botocore.exceptions
import httpx
import pytest
import redis
from django.db import IntegrityError, InterfaceError, OperationalError
from django.utils import timezone

from memory_app.errors import Conflict, NotFound, ValidationFailed
from memory_app.models import HistoryRecord, UnitStatus, WorkflowSnapshot, WorkflowState, WorkflowUnit
from tests.workflows.pipelines import effects
from workflows import engine, tasks
from workflows.engine import Step, StepContext, WorkflowType, runner, steps, workflow_type_register
from workflows.engine.units import workflow_unit_claim, workflow_unit_complete

pytestmark = pytest.mark.django_db


def actions(run: WorkflowState) -> list[str]:
    return list(HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id").values_list("action", flat=True))


def events(run: WorkflowState) -> list[tuple[str, str, str]]:
    return list(run.snapshots.order_by("sequence").values_list("event", "step", "status"))


def start(run_inline, user, workflow_type="three_steps", data=None) -> WorkflowState:
    run = run_inline(
        engine.workflow_start, user=user, workflow_type=workflow_type, project_id="proj-001", data=data or {}
    )
    run.refresh_from_db()
    return run


def test_three_steps_run_end_to_end(run_inline, user, project):
    run = start(run_inline, user, data={"text": "one two three", "api_key": "sk-secret"})

    assert run.status == "completed"
    assert run.data == {"text": "ONE TWO THREE", "api_key": "[REDACTED]", "length": 13, "words": 3}
    assert run.progress == {"current": 3, "total": 3, "percent": 100.0, "description": "Completed."}
    assert events(run) == [
        ("started", "measure", "in_progress"),
        ("step_completed", "measure", "in_progress"),
        ("step_completed", "shout", "in_progress"),
        ("step_completed", "count_words", "completed"),
        ("completed", "count_words", "completed"),
    ]
    assert actions(run) == [
        "workflow_started",
        "workflow_step_completed",
        "workflow_step_completed",
        "workflow_step_completed",
        "workflow_completed",
    ]
    assert effects(str(run.pk)) == [f"{run.pk}:count_words:0", f"{run.pk}:measure:0", f"{run.pk}:shout:0"]


def test_fan_out_runs_one_unit_per_segment_and_merges_in_order(run_inline, user, project):
    run = start(run_inline, user, "fan_out", {"text": "a b c d"})

    assert run.status == "completed"
    assert run.data["pages"] == ["<a>", "<b>", "<c>", "<d>"]
    assert run.data["book"] == "<a><b><c><d>"
    assert WorkflowUnit.objects.filter(workflow=run, step="render", status="done").count() == 4
    assert sorted(effects(str(run.pk))) == sorted(
        [f"{run.pk}:split:0", f"{run.pk}:bind:0"] + [f"{run.pk}:render:{index}" for index in range(4)]
    )
    assert actions(run).count("workflow_step_completed") == 3


def test_fan_out_progress_reports_segments(run_inline, user, project, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    faults = {"render": {"fail_while_exists": str(flag), "units": [3]}}

    run = start(run_inline, user, "fan_out", {"text": "a b c d", "faults": faults})

    assert run.status == "failed"
    assert run.progress["total_segments"] == 4
    assert run.progress["completed_segments"] == 3
    assert run.progress["current_segment"] == 3
    assert run.progress["current"] == 1
    assert run.progress["percent"] == round(100 * (1 + 3 / 4) / 3, 1)


def test_transient_error_is_retried_then_succeeds(run_inline, user, project):
    run = start(run_inline, user, data={"text": "x", "faults": {"shout": {"transient": 2}}})

    assert run.status == "completed"
    unit = WorkflowUnit.objects.get(workflow=run, step="shout")
    assert unit.attempts == 3
    assert effects(str(run.pk)).count(f"{run.pk}:shout:0") == 1
    assert "workflow_failed" not in actions(run)


def test_retries_exhausted_fail_the_run_with_step_and_error(run_inline, user, project, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"max_retries": 1})}
    )

    run = start(run_inline, user, data={"text": "x", "faults": {"shout": {"transient": 5}}})

    assert run.status == "failed"
    assert run.current_step == "shout"
    assert run.error == {
        "step": "shout",
        "step_index": 1,
        "type": "RetryableStepError",
        "message": "injected transient error, attempt 2",
        "retryable": True,
        "unit_index": 0,
        "attempts": 2,
    }
    assert actions(run)[-1] == "workflow_failed"
    assert effects(str(run.pk)) == [f"{run.pk}:measure:0"]


def test_permanent_error_fails_at_once_and_resume_redoes_only_failed_units(run_inline, user, project, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    faults = {"render": {"fail_while_exists": str(flag), "units": [3]}}
    run = start(run_inline, user, "fan_out", {"text": "a b c d e", "faults": faults})
    assert run.status == "failed"
    assert run.error["type"] == "ValueError"
    assert run.error["unit_index"] == 3
    # Once the run failed, unit 4 was not started: a failed run spends nothing more.
    units = dict(WorkflowUnit.objects.filter(workflow=run, step="render").values_list("unit_index", "status"))
    assert units == {0: "done", 1: "done", 2: "done", 3: "failed", 4: "pending"}
    done_before = dict(
        WorkflowUnit.objects.filter(workflow=run, step="render", status="done").values_list("unit_index", "attempts")
    )

    flag.unlink()
    run = run_inline(engine.workflow_resume, workflow=run, user=user)
    run.refresh_from_db()

    assert run.status == "completed"
    assert run.data["book"] == "<a><b><c><d><e>"
    render_effects = [key for key in effects(str(run.pk)) if ":render:" in key]
    assert sorted(render_effects) == [f"{run.pk}:render:{index}" for index in range(5)]
    for index in done_before:
        assert WorkflowUnit.objects.get(workflow=run, step="render", unit_index=index).attempts == done_before[index]
    assert actions(run).count("workflow_resumed") == 1
    assert actions(run).count("workflow_failed") == 1


def test_resume_of_a_run_that_is_not_failed_is_refused(run_inline, user, project):
    run = start(run_inline, user, data={"text": "x"})
    before = (run.status, run.snapshots.count(), HistoryRecord.objects.count())

    with pytest.raises(Conflict):
        run_inline(engine.workflow_resume, workflow=run, user=user)

    run.refresh_from_db()
    assert (run.status, run.snapshots.count(), HistoryRecord.objects.count()) == before


def test_fork_from_step_two_keeps_the_original_snapshots(run_inline, user, project):
    run = start(run_inline, user, data={"text": "one two"})
    original = list(WorkflowSnapshot.objects.filter(workflow=run).order_by("sequence").values())

    # Index 2 = the state right after the second step (shout): the fork reruns only count_words.
    run = run_inline(engine.workflow_restore, workflow=run, index=2, rerun=True, user=user)
    run.refresh_from_db()

    assert run.status == "completed"
    assert (
        list(WorkflowSnapshot.objects.filter(workflow=run, sequence__lte=5).order_by("sequence").values()) == original
    )
    forked = list(run.snapshots.filter(sequence__gt=5).order_by("sequence"))
    assert [(snapshot.event, snapshot.step) for snapshot in forked] == [
        ("restored", "count_words"),
        ("step_completed", "count_words"),
        ("completed", "count_words"),
    ]
    assert forked[0].parent.sequence == 3
    assert forked[0].data == original[2]["data"]
    assert effects(str(run.pk)).count(f"{run.pk}:count_words:0") == 2
    assert effects(str(run.pk)).count(f"{run.pk}:shout:0") == 1
    assert actions(run)[-3:] == ["workflow_restored", "workflow_step_completed", "workflow_completed"]


def test_restore_without_rerun_waits_as_pending(run_inline, user, project):
    run = start(run_inline, user, data={"text": "one two"})

    run = run_inline(engine.workflow_restore, workflow=run, index=-4, rerun=False, user=user)
    run.refresh_from_db()

    assert (run.status, run.step_index, run.current_step) == ("pending", 1, "shout")
    assert run.data == {"text": "one two", "length": 7}
    assert WorkflowUnit.objects.filter(workflow=run, step_key=run.step_key).count() == 0


@pytest.mark.parametrize("index", [6, -7, 100])
def test_restore_index_out_of_range_changes_nothing(run_inline, user, project, index):
    run = start(run_inline, user, data={"text": "x"})
    before = (run.status, run.step_key, run.snapshots.count(), HistoryRecord.objects.count())

    with pytest.raises(ValidationFailed) as error:
        run_inline(engine.workflow_restore, workflow=run, index=index, rerun=True, user=user)

    assert error.value.details["snapshot_count"] == 5
    run.refresh_from_db()
    assert (run.status, run.step_key, run.snapshots.count(), HistoryRecord.objects.count()) == before


def test_cancel_stops_later_steps(eager, effects_table, user, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    engine.workflow_cancel(workflow=run, user=user)
    # The first step's message is delivered after the cancel (a revoke that was missed): it does nothing.
    for callback in callbacks:
        callback()

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert effects(str(run.pk)) == []
    assert actions(run) == ["workflow_started", "workflow_cancelled"]
    assert WorkflowUnit.objects.get(workflow=run).status == UnitStatus.CANCELLED


def test_cancel_of_a_finished_run_is_refused(run_inline, user, project):
    run = start(run_inline, user, data={"text": "x"})

    with pytest.raises(Conflict):
        engine.workflow_cancel(workflow=run, user=user)

    run.refresh_from_db()
    assert run.status == "completed"
    assert actions(run).count("workflow_cancelled") == 0


def test_unknown_workflow_type_is_refused(user, project):
    with pytest.raises(ValidationFailed):
        engine.workflow_start(user=user, workflow_type="nope", project_id="proj-001", data={})
    assert WorkflowState.objects.count() == 0


def test_someone_elses_project_is_not_found(other_user, project):
    with pytest.raises(NotFound):
        engine.workflow_start(user=other_user, workflow_type="three_steps", project_id="proj-001", data={})
    assert WorkflowState.objects.count() == 0


def test_a_duplicate_delivery_of_a_done_unit_does_nothing(run_inline, user, project):
    run = start(run_inline, user, data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run, step="measure")

    outcome = engine.unit_execute(unit_id=unit.pk, lease_owner="late")

    assert outcome == {"unit": unit.pk, "outcome": "skipped"}
    assert effects(str(run.pk)).count(f"{run.pk}:measure:0") == 1


def test_recovery_requeues_units_whose_lease_expired(
    eager, effects_table, user, project, django_capture_on_commit_callbacks
):
    # The first step's message is lost (never sent): only the lease tells.
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    assert engine.workflow_recover() == {"requeued": 0, "in_flight": True}
    WorkflowUnit.objects.filter(workflow=run).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.workflow_recover()

    assert outcome == {"requeued": 1, "in_flight": True}
    run.refresh_from_db()
    assert run.status == "completed"
    assert engine.workflow_recover() == {"requeued": 0, "in_flight": False}


def test_an_expired_running_unit_is_taken_over_and_the_old_claim_cannot_complete(effects_table, user, project):
    run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run)

    first = workflow_unit_claim(unit_id=unit.pk, lease_owner="dead-worker")
    assert workflow_unit_claim(unit_id=unit.pk, lease_owner="second") is None  # the lease is live
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = workflow_unit_claim(unit_id=unit.pk, lease_owner="second")

    assert second is not None and second.attempts == 2
    assert workflow_unit_complete(unit=first, result={"x": 1}) is False
    assert workflow_unit_complete(unit=second, result={"x": 2}) is True
    assert WorkflowUnit.objects.get(pk=unit.pk).result == {"x": 2}


def _s3_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (engine.RetryableStepError("x"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectError("down"), True),
        (httpx.HTTPStatusError("x", request=httpx.Request("GET", "http://t"), response=httpx.Response(429)), True),
        (httpx.HTTPStatusError("x", request=httpx.Request("GET", "http://t"), response=httpx.Response(503)), True),
        (httpx.HTTPStatusError("x", request=httpx.Request("GET", "http://t"), response=httpx.Response(400)), False),
        (OperationalError("terminating connection due to administrator command"), True),
        (InterfaceError("connection already closed"), True),
        (redis.exceptions.ConnectionError("Connection refused"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (IntegrityError("duplicate key"), False),
        # An S3-compatible store: out of reach or 5xx is transient; a refusal (403, 404) is not.
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://minio:9000"), True),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://minio:9000"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://minio:9000"), True),
        (_s3_error(503, "SlowDown"), True),
        (_s3_error(500, "InternalError"), True),
        (_s3_error(403, "AccessDenied"), False),
        (_s3_error(404, "NoSuchKey"), False),
        (ValueError("bad"), False),
        (KeyError("k"), False),
    ],
)
def test_only_transient_errors_are_retryable(exc, retryable):
    assert engine.is_retryable(exc) is retryable


def test_retry_delay_grows_with_jitter_and_stays_below_the_visibility_timeout(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 100}
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 50.0)]:
        delays = [engine.retry_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    assert all(150 <= engine.retry_delay(20) <= 300 for _ in range(20))


def test_a_unit_that_finishes_after_a_sibling_failed_the_run_keeps_its_result(
    run_inline, user, project, tmp_path, monkeypatch
):
    from tests.workflows import pipelines

    flag = tmp_path / "fail"
    flag.touch()

    def racing_render(context):
        if context.unit_index == 0:
            # While unit 0 computes, its sibling (unit 1) runs on another worker and fails the run.
            sibling = WorkflowUnit.objects.get(workflow_id=context.workflow_id, step="render", unit_index=1)
            assert engine.unit_execute(unit_id=sibling.pk, lease_owner="other-worker")["outcome"] == "failed"
        return pipelines.render_segment(context)

    racing = engine.WorkflowType(
        name="fan_out",
        steps=(
            pipelines.FAN_OUT.steps[0],
            engine.FanOutStep(
                "render",
                items=lambda data: data["segments"],
                run=racing_render,
                merge=pipelines.merge_pages,
                commit=pipelines.record_effect,
            ),
            pipelines.FAN_OUT.steps[2],
        ),
    )
    monkeypatch.setitem(steps._REGISTRY, "fan_out", racing)
    faults = {"render": {"fail_while_exists": str(flag), "units": [1]}}

    run = start(run_inline, user, "fan_out", {"text": "a b", "faults": faults})

    assert run.status == "failed"
    unit0 = WorkflowUnit.objects.get(workflow=run, step="render", unit_index=0)
    assert (unit0.status, unit0.result, unit0.attempts) == ("done", "<a>", 1)
    assert effects(str(run.pk)).count(f"{run.pk}:render:0") == 1

    flag.unlink()
    run = run_inline(engine.workflow_resume, workflow=run, user=user)
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.data["pages"] == ["<a>", "<b>"]
    assert WorkflowUnit.objects.get(pk=unit0.pk).attempts == 1
    assert effects(str(run.pk)).count(f"{run.pk}:render:0") == 1


def test_recovery_never_requeues_the_stale_units_a_restore_left_behind(
    eager, effects_table, user, project, tmp_path, django_capture_on_commit_callbacks
):
    flag = tmp_path / "fail"
    flag.touch()
    faults = {"render": {"fail_while_exists": str(flag), "units": [0]}}
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.workflow_start(
            user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a b", "faults": faults}
        )
    run.refresh_from_db()
    assert run.status == "failed"
    stale = WorkflowUnit.objects.get(workflow=run, step="render", unit_index=1)
    assert stale.status == UnitStatus.PENDING
    # Fork from the start and let the new branch's first message be lost: only its unit may come back.
    with django_capture_on_commit_callbacks(execute=False):
        engine.workflow_restore(workflow=run, index=0, rerun=True, user=user)
    WorkflowUnit.objects.filter(workflow=run).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = engine.workflow_recover()

    assert outcome == {"requeued": 1, "in_flight": True}
    assert len(callbacks) == 1
    assert WorkflowUnit.objects.get(pk=stale.pk).status == UnitStatus.CANCELLED
    assert WorkflowUnit.objects.get(pk=stale.pk).lease_expires_at < timezone.now()


COMMIT_CONTEXTS: list[StepContext] = []

workflow_type_register(
    WorkflowType(
        name="commit_sees_its_run",
        steps=(Step("only", lambda context: context.data, commit=lambda context, _: COMMIT_CONTEXTS.append(context)),),
    )
)


def test_a_commit_is_given_the_run_project_and_owner(run_inline, user, project):
    COMMIT_CONTEXTS.clear()

    run = start(run_inline, user, "commit_sees_its_run", {"text": "x"})

    assert run.status == "completed"
    [context] = COMMIT_CONTEXTS
    assert (context.project, context.owner, context.step) == (project, user, "only")


RUN_CONTEXTS: list[StepContext] = []


def _run_sees_its_run(context: StepContext) -> dict:
    RUN_CONTEXTS.append(context)
    return context.data


workflow_type_register(WorkflowType(name="run_sees_its_run", steps=(Step("only", _run_sees_its_run),)))


def test_a_step_run_is_given_the_run_project_and_owner(run_inline, user, project):
    RUN_CONTEXTS.clear()

    run = start(run_inline, user, "run_sees_its_run", {"text": "x"})

    assert run.status == "completed"
    [context] = RUN_CONTEXTS
    assert (context.project, context.owner, context.step) == (project, user, "only")


def test_the_claim_reads_the_run_project_and_owner_in_one_query(
    effects_table, user, project, django_capture_on_commit_callbacks, django_assert_num_queries
):
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="run_sees_its_run", project_id="proj-001", data={})
    unit = WorkflowUnit.objects.get(workflow=run)

    # The claim (one UPDATE), then the unit with its run, the run's project and owner (one SELECT).
    with django_assert_num_queries(2):
        claimed = workflow_unit_claim(unit_id=unit.pk, lease_owner="worker")
    with django_assert_num_queries(0):
        assert (claimed.workflow.project, claimed.workflow.owner) == (project, user)


def test_a_plain_step_costs_a_fixed_number_of_queries(
    effects_table, user, project, django_capture_on_commit_callbacks, django_assert_num_queries
):
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run)

    # Claim (UPDATE) and read the unit with its run; in the transaction (a savepoint here, in the test's own):
    # lock the run, mark the unit done, the step's effect, the snapshot sequence and count, the snapshot, the
    # run's compare-and-set, the step's live event, the history record and its search index row, the next step's
    # unit with its task id.
    with django_capture_on_commit_callbacks(execute=False) as callbacks, django_assert_num_queries(14):
        outcome = engine.unit_execute(unit_id=unit.pk, lease_owner="worker")

    assert outcome == {"unit": unit.pk, "outcome": "done"}
    assert len(callbacks) == 1  # the next unit's message (no Redis here: no wake-up to publish for the event)
    run.refresh_from_db()
    assert (run.current_step, run.head.event, run.head.sequence) == ("shout", "step_completed", 2)


def test_every_message_carries_the_task_id_stored_on_its_unit(
    effects_table, user, project, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        tasks.run_unit, "apply_async", lambda args, task_id, countdown=None: sent.append((args[0], task_id))
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run)
    assert sent == [(unit.pk, unit.task_id)]

    # The message was lost: recovery sends the unit again under a new task id, the one a cancel must revoke.
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        engine.workflow_recover()

    unit.refresh_from_db()
    assert len(sent) == 2
    assert sent[1] == (unit.pk, unit.task_id)
    assert sent[1][1] != sent[0][1]


def _fan_out_with_one_unit_running(user, django_capture_on_commit_callbacks) -> tuple[WorkflowState, WorkflowUnit]:
    """A fan_out run in its render step: unit 0 claimed by a worker that is still at it, unit 1 queued."""

    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a b"})
    split = WorkflowUnit.objects.get(workflow=run, step="split")
    with django_capture_on_commit_callbacks(execute=False):
        assert engine.unit_execute(unit_id=split.pk, lease_owner="worker")["outcome"] == "done"
    render = WorkflowUnit.objects.get(workflow=run, step="render", unit_index=0)
    claimed = workflow_unit_claim(unit_id=render.pk, lease_owner="busy-worker")
    assert claimed is not None
    run.refresh_from_db()
    return run, claimed


def _unit_statuses(run: WorkflowState) -> list[tuple[str, int, str]]:
    return list(WorkflowUnit.objects.filter(workflow=run).order_by("id").values_list("step", "unit_index", "status"))


def test_cancel_ends_the_runs_units_and_nothing_runs_them_afterwards(
    effects_table, user, project, django_capture_on_commit_callbacks, monkeypatch
):

    revoked: list[list[str]] = []
    monkeypatch.setattr("workflows.engine.operations.revoke", revoked.append)
    run, claimed = _fan_out_with_one_unit_running(user, django_capture_on_commit_callbacks)
    queued = WorkflowUnit.objects.get(workflow=run, step="render", unit_index=1)

    with django_capture_on_commit_callbacks(execute=True):
        engine.workflow_cancel(workflow=run, user=user)

    assert _unit_statuses(run) == [("split", 0, "done"), ("render", 0, "cancelled"), ("render", 1, "cancelled")]
    assert revoked == [[claimed.task_id, queued.task_id]]
    # A late delivery, the step that was running, and recovery after every lease ran out: all do nothing.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert engine.unit_execute(unit_id=queued.pk, lease_owner="late") == {"unit": queued.pk, "outcome": "skipped"}
        assert workflow_unit_complete(unit=claimed, result="<a>") is False
        WorkflowUnit.objects.filter(workflow=run).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert engine.workflow_recover() == {"requeued": 0, "in_flight": False}
    assert callbacks == []
    assert _unit_statuses(run) == [("split", 0, "done"), ("render", 0, "cancelled"), ("render", 1, "cancelled")]
    assert effects(str(run.pk)) == [f"{run.pk}:split:0"]
    assert actions(run) == ["workflow_started", "workflow_step_completed", "workflow_cancelled"]


@pytest.mark.parametrize("rerun", [False, True])
def test_restore_ends_the_old_branchs_units_and_nothing_runs_them_afterwards(
    effects_table, user, project, django_capture_on_commit_callbacks, rerun
):

    # Unit 1 fails for good while unit 0 is still running: the run is failed, unit 0 left running.
    run, claimed = _fan_out_with_one_unit_running(user, django_capture_on_commit_callbacks)
    failing = workflow_unit_claim(
        unit_id=WorkflowUnit.objects.get(workflow=run, step="render", unit_index=1).pk, lease_owner="worker"
    )
    assert runner._handle_failure(failing, ValueError("bad segment"))["outcome"] == "failed"
    assert _unit_statuses(run) == [("split", 0, "done"), ("render", 0, "running"), ("render", 1, "failed")]

    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_restore(workflow=run, index=1, rerun=rerun, user=user)

    new_units = [("render", 0, "pending"), ("render", 1, "pending")] if rerun else []
    old_units = [("split", 0, "done"), ("render", 0, "cancelled"), ("render", 1, "failed")]
    assert _unit_statuses(run) == old_units + new_units
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert engine.unit_execute(unit_id=claimed.pk, lease_owner="late") == {"unit": claimed.pk, "outcome": "skipped"}
        assert workflow_unit_complete(unit=claimed, result="<a>") is False
        WorkflowUnit.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert engine.workflow_recover() == {"requeued": 0, "in_flight": rerun}
    assert callbacks == []
    assert _unit_statuses(run) == old_units + new_units
    assert effects(str(run.pk)) == [f"{run.pk}:split:0"]


def test_a_unit_held_by_a_dead_claim_is_delivered_again_just_after_its_lease_ends(
    effects_table, user, project, django_capture_on_commit_callbacks, monkeypatch
):

    sent: list[tuple[int, dict, str, float]] = []
    monkeypatch.setattr(
        tasks.run_unit,
        "apply_async",
        lambda args, kwargs=None, task_id=None, countdown=None: sent.append((args[0], kwargs, task_id, countdown)),
    )
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = WorkflowUnit.objects.get(workflow=run)
    # A pool process claimed the unit and died; its worker gave the message back, so it is delivered at once.
    assert workflow_unit_claim(unit_id=unit.pk, lease_owner="dead-process") is not None
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=20))

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.unit_execute(unit_id=unit.pk, lease_owner="worker", task_id=unit.task_id)

    assert outcome["outcome"] == "held"
    assert 20.0 < outcome["again_in"] <= 21.0
    assert sent == [(unit.pk, {"after_lease": True}, unit.task_id, outcome["again_in"])]
    # That delivery finds the lease renewed (the holder was alive after all): it does nothing, sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        again = engine.unit_execute(unit_id=unit.pk, lease_owner="worker", task_id=unit.task_id, after_lease=True)
    assert again == {"unit": unit.pk, "outcome": "skipped"}
    assert len(sent) == 1
    # Once the lease is over, the delivery takes the unit over and runs it.
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False):
        done = engine.unit_execute(unit_id=unit.pk, lease_owner="worker", task_id=unit.task_id, after_lease=True)
    assert done == {"unit": unit.pk, "outcome": "done"}
    assert WorkflowUnit.objects.get(pk=unit.pk).attempts == 2
    assert effects(str(run.pk)) == [f"{run.pk}:measure:0"]


def test_recovery_looks_again_when_the_first_lease_ends_at_the_latest_after_its_interval(
    effects_table, user, project, django_capture_on_commit_callbacks, settings
):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"recovery_interval": 10})}
    )
    assert engine.recovery_countdown() == 10.0  # nothing in flight
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a"})
    unit = WorkflowUnit.objects.get(workflow=run)

    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=4))
    assert 4.0 < engine.recovery_countdown() <= 4.5
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=600))
    assert engine.recovery_countdown() == 10.0
    WorkflowUnit.objects.filter(pk=unit.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert engine.recovery_countdown() == 0.5


@pytest.mark.django_db(transaction=True)
def test_a_broken_database_connection_is_a_retry_recorded_on_a_new_connection(
    user, project, django_capture_on_commit_callbacks, monkeypatch
):

    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "x"})
    unit = workflow_unit_claim(unit_id=WorkflowUnit.objects.get(workflow=run).pk, lease_owner="worker")
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_unit, "apply_async", lambda args, **options: sent.append(args[0]))
    resets: list[bool] = []
    monkeypatch.setattr(runner, "database_connection_reset", lambda: resets.append(True))
    monkeypatch.setattr(runner, "FAILURE_RECORD_PAUSES", (0.0, 0.0, 0.0))
    record = runner._record_failure
    attempts: list[int] = []

    def record_on_a_database_still_restarting(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return record(*args, **kwargs)

    monkeypatch.setattr(runner, "_record_failure", record_on_a_database_still_restarting)

    outcome = runner._handle_failure(unit, OperationalError("terminating connection due to administrator command"))

    assert outcome["outcome"] == "retry"
    assert (len(attempts), len(resets), sent) == (2, 2, [unit.pk])
    unit = WorkflowUnit.objects.get(pk=unit.pk)
    assert (unit.status, unit.error["type"], unit.error["retryable"]) == ("pending", "OperationalError", True)
    run.refresh_from_db()
    assert (run.status, run.error) == ("in_progress", None)
    assert actions(run) == ["workflow_started"]

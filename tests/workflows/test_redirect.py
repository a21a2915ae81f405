"""Redirecting runs of the engine's small pipelines: approval pauses (awaiting_input, continue, cancel, stuck
detection), preferences checked at start and restore, the merge patch, the per-run cache policy."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from memory_app.errors import ValidationFailed, WorkflowLimitReached, WorkflowNotWaiting
from memory_app.models import HistoryRecord, WorkflowSnapshot, WorkflowState
from memory_app.services.cache import cache_get_or_compute
from tests.workflows.pipelines import effects
from workflows import engine
from workflows.engine import CACHE_POLICY, dispatch, merge_patch
from workflows.pipelines.generation import generation_cached

pytestmark = pytest.mark.django_db


def start(run_inline, user, preferences, workflow_type="three_steps", text="a b c") -> WorkflowState:
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type=workflow_type,
        project_id="proj-001",
        data={"text": text},
        preferences=preferences,
    )
    run.refresh_from_db()
    return run


def actions(run: WorkflowState) -> list[str]:
    return list(HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id").values_list("action", flat=True))


def events(run: WorkflowState) -> list[tuple[str, str]]:
    return list(run.snapshots.order_by("sequence").values_list("event", "status"))


def frozen(run: WorkflowState) -> tuple:
    run.refresh_from_db()
    return (
        run.status,
        run.step_key,
        run.data,
        run.preferences,
        WorkflowSnapshot.objects.filter(workflow=run).count(),
        HistoryRecord.objects.filter(workflow_id=run.pk).count(),
        run.units.count(),
    )


def test_a_run_pauses_after_the_named_step_awaiting_input(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["measure"]})

    assert run.status == "awaiting_input"
    assert (run.step_index, run.current_step) == (1, "shout")
    assert run.data == {"text": "a b c", "length": 5}
    assert run.progress["description"] == "Awaiting input before step 2: shout."
    assert events(run) == [
        ("started", "in_progress"),
        ("step_completed", "awaiting_input"),
        ("awaiting_input", "awaiting_input"),
    ]
    assert actions(run) == ["workflow_started", "workflow_step_completed", "workflow_awaiting_input"]
    assert effects(str(run.pk)) == [f"{run.pk}:measure:0"]
    assert run.units.count() == 1  # the next step's units wait for the continue


def test_continue_applies_the_patch_and_runs_the_rest(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["measure"]})

    run_inline(engine.workflow_continue_run, workflow=run, user=user, data_patch={"text": "x y"})

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.data == {"text": "X Y", "length": 5, "words": 2}
    assert [event for event, _ in events(run)][2:4] == ["awaiting_input", "continued"]
    assert actions(run).count("workflow_continued") == 1
    record = HistoryRecord.objects.get(workflow_id=run.pk, action="workflow_continued")
    assert record.details == {"step": "shout", "step_index": 1, "data_edited": True}
    assert effects(str(run.pk)) == [f"{run.pk}:count_words:0", f"{run.pk}:measure:0", f"{run.pk}:shout:0"]


def test_pauses_after_each_named_step_and_not_after_the_last(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["measure", "shout", "count_words"]})
    run_inline(engine.workflow_continue_run, workflow=run, user=user)
    run.refresh_from_db()
    assert (run.status, run.current_step) == ("awaiting_input", "count_words")

    run_inline(engine.workflow_continue_run, workflow=run, user=user)

    run.refresh_from_db()
    assert run.status == "completed"  # nothing is left to approve after the last step
    assert actions(run).count("workflow_awaiting_input") == 2


def test_continue_on_a_run_that_is_not_waiting_is_refused_and_changes_nothing(run_inline, user, project):
    run = start(run_inline, user, {})
    assert run.status == "completed"
    before = frozen(run)

    with pytest.raises(WorkflowNotWaiting) as refused:
        run_inline(engine.workflow_continue_run, workflow=run, user=user, data_patch={"text": "z"})

    assert refused.value.status_code == 409
    assert refused.value.details == {"workflow_id": str(run.pk), "status": "completed"}
    assert frozen(run) == before


def test_cancel_works_while_waiting_and_continue_is_then_refused(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["shout"]})
    assert run.status == "awaiting_input"

    run_inline(engine.workflow_cancel, workflow=run, user=user)

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert events(run)[-1] == ("cancelled", "cancelled")
    with pytest.raises(WorkflowNotWaiting):
        run_inline(engine.workflow_continue_run, workflow=run, user=user)
    assert effects(str(run.pk)) == [f"{run.pk}:measure:0", f"{run.pk}:shout:0"]


def test_a_waiting_run_can_be_restored_and_rerun(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["shout"]})

    run_inline(engine.workflow_restore, workflow=run, index=0, rerun=True, user=user, preferences={"pause_after": None})

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.preferences == {}
    assert run.data == {"text": "A B C", "length": 5, "words": 3}


def test_stuck_detection_leaves_waiting_runs_alone(run_inline, user, project):
    run = start(run_inline, user, {"pause_after": ["measure"]})
    long_ago = timezone.now() - dt.timedelta(days=2)
    WorkflowState.objects.filter(pk=run.pk).update(updated_at=long_ago)
    run.units.update(updated_at=long_ago)

    assert engine.workflow_stuck_flag() == []
    assert engine.workflow_stuck_handle() == {"flagged": [], "units_released": 0, "requeued": 0}
    assert engine.workflow_recover()["requeued"] == 0

    run.refresh_from_db()
    assert (run.status, run.stuck_since) == ("awaiting_input", None)
    assert not HistoryRecord.objects.filter(workflow_id=run.pk, action="workflow_stuck").exists()


@pytest.mark.parametrize(
    ("preferences", "field"),
    [
        ({"pause_after": ["measure", "paint"]}, "preferences.pause_after"),
        ({"pause_after": "measure"}, "preferences.pause_after"),
        ({"pause_after": [1]}, "preferences.pause_after"),
        ({"cache": "sometimes"}, "preferences.cache"),
    ],
)
def test_bad_redirect_preferences_are_refused_at_start_creating_nothing(run_inline, user, project, preferences, field):
    with pytest.raises(ValidationFailed) as refused:
        start(run_inline, user, preferences)

    assert list(refused.value.details["fields"]) == [field]
    assert WorkflowState.objects.count() == 0


def test_an_unknown_step_in_restore_preferences_is_refused_and_changes_nothing(run_inline, user, project):
    run = start(run_inline, user, {})
    before = frozen(run)

    with pytest.raises(ValidationFailed) as refused:
        run_inline(
            engine.workflow_restore, workflow=run, index=1, rerun=True, user=user, preferences={"pause_after": ["x"]}
        )

    assert refused.value.details["unknown_steps"] == ["x"]
    assert frozen(run) == before


def test_restore_with_a_data_patch_forks_with_the_edited_data(run_inline, user, project):
    run = start(run_inline, user, {})
    first_snapshots = list(run.snapshots.values_list("pk", "data"))

    run_inline(engine.workflow_restore, workflow=run, index=1, rerun=True, user=user, data_patch={"text": "d e"})

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.data == {"text": "D E", "length": 5, "words": 2}  # measured before the fork: 5 is kept
    # The old branch is kept as it was.
    kept = dict(run.snapshots.values_list("pk", "data"))
    assert all(kept[pk] == data for pk, data in first_snapshots)
    record = HistoryRecord.objects.get(workflow_id=run.pk, action="workflow_restored")
    assert (record.details["data_edited"], record.details["preferences_edited"]) == (True, False)


def test_merge_patch_follows_rfc_7386():
    # The examples of RFC 7386, appendix A.
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, expected in cases:
        original = repr(target)
        assert merge_patch(target, patch) == expected
        assert repr(target) == original  # the target is not changed in place


@pytest.mark.parametrize(
    ("policy", "computed"),
    [("use", [1]), ("refresh", [1, 1]), ("bypass", [1, 1])],
)
def test_the_run_cache_policy_governs_every_generation_call(cache_namespaces, policy, computed):
    cache_namespaces(api_responses={"backend": "memory", "max_size": 100})
    calls: list[int] = []
    key = {"prompt": f"policy {policy}"}

    def generate() -> str:
        calls.append(1)
        return f"answer {len(calls)}"

    first = cache_get_or_compute(namespace="api_responses", key=key, compute=generate)  # cached under "use"
    token = CACHE_POLICY.set(policy)
    try:
        second = generation_cached(namespace="api_responses", key=key, generate=generate)
    finally:
        CACHE_POLICY.reset(token)

    assert first == "answer 1"
    assert calls == computed
    assert second.cached is (policy == "use")
    stored = cache_get_or_compute(namespace="api_responses", key=key, compute=lambda: "absent")
    # refresh stored the new answer; bypass left the old one where it was.
    assert stored == {"use": "answer 1", "refresh": "answer 2", "bypass": "answer 1"}[policy]


def test_the_cache_preference_is_recorded_in_the_run_data(run_inline, user, project):
    run = start(run_inline, user, {"cache": "bypass"})

    assert run.data["cache_policy"] == "bypass"
    assert run.preferences == {"cache": "bypass"}


def test_a_fan_out_redraw_runs_one_unit_and_the_steps_after_it(run_inline, user, project):
    run = start(run_inline, user, {}, workflow_type="fan_out", text="a b c")
    assert run.data["book"] == "<a><b><c>"

    fork, created = run_inline(engine.workflow_redraw, workflow=run, panel=2, user=user, prompt_extra="!")

    fork.refresh_from_db()
    assert created is True
    assert fork.status == "completed"
    assert fork.data["book"] == "<a><b!><c>"
    assert effects(str(fork.pk)) == [f"{fork.pk}:bind:0", f"{fork.pk}:render:1"]
    assert [event for event, _ in events(fork)] == ["forked", "step_completed", "step_completed", "completed"]
    run.refresh_from_db()
    assert run.data["book"] == "<a><b><c>"


def test_a_redraw_that_has_no_place_among_the_owners_runs_is_refused(run_inline, user, project, settings):
    run = start(run_inline, user, {}, workflow_type="fan_out", text="a b")
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"max_active_runs_per_user": 0})}
    )
    before = WorkflowState.objects.count()

    with pytest.raises(WorkflowLimitReached):
        run_inline(engine.workflow_redraw, workflow=run, panel=1, user=user)

    assert WorkflowState.objects.count() == before


@pytest.mark.django_db(transaction=True)
def test_two_redraws_of_one_panel_at_the_same_moment_make_one_run(user, project, eager, effects_table, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    with transaction.atomic():
        run = engine.workflow_start(
            user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a b c"}, preferences={}
        )
    run.refresh_from_db()
    assert run.status == "completed"

    class Broker:
        """Where the redraws' unit messages go: kept, not run, so both redraws meet an unfinished fork."""

        sent: list[int] = []

        def apply_async(self, args, **options) -> None:
            self.sent.append(args[0])

    monkeypatch.setattr(dispatch, "_unit_tasks", [Broker()])
    barrier = threading.Barrier(2)
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def redraw() -> None:
        try:
            barrier.wait(timeout=10)
            fork, created = engine.workflow_redraw(workflow=run, panel=2, user=user, prompt_extra="!")
            outcomes.append((str(fork.pk), created))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=redraw) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(created for _, created in outcomes) == [False, True]
    assert len({fork_id for fork_id, _ in outcomes}) == 1
    assert WorkflowState.objects.filter(forked_from=run).count() == 1
    assert len(Broker.sent) == 1  # one unit to draw, sent once

"""The workflow admin (pytest-django's ``admin_client`` is a logged-in superuser): filters, inlines, actions."""

from __future__ import annotations

import pytest

from memory_app.models import HistoryRecord, WorkflowState
from workflows import engine

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_run(run_inline, user, project, tmp_path) -> WorkflowState:
    flag = tmp_path / "fail"
    flag.touch()
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="three_steps",
        project_id="proj-001",
        data={"text": "a b", "faults": {"shout": {"fail_while_exists": str(flag)}}},
    )
    flag.unlink()
    run.refresh_from_db()
    assert run.status == "failed"
    return run


def test_changelist_filters_and_change_page_with_snapshots(admin_client, failed_run):
    listing = admin_client.get("/admin/memory_app/workflowstate/?status__exact=failed&workflow_type=three_steps")
    page = admin_client.get(f"/admin/memory_app/workflowstate/{failed_run.pk}/change/")

    assert listing.status_code == 200
    assert str(failed_run.pk) in listing.content.decode()
    assert page.status_code == 200
    assert page.content.decode().count("step_completed") >= 1
    assert "injected failure" in page.content.decode()


def test_resume_action_runs_the_failed_step(admin_client, failed_run, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/memory_app/workflowstate/",
            {"action": "resume_runs", "_selected_action": [str(failed_run.pk)]},
        )

    assert response.status_code == 302
    failed_run.refresh_from_db()
    assert failed_run.status == "completed"
    assert HistoryRecord.objects.filter(workflow_id=failed_run.pk, action="workflow_resumed").count() == 1


def test_cancel_action_refuses_a_finished_run_with_a_message(admin_client, failed_run, run_inline):
    admin_client.post(
        "/admin/memory_app/workflowstate/", {"action": "cancel_runs", "_selected_action": [str(failed_run.pk)]}
    )
    failed_run.refresh_from_db()
    assert failed_run.status == "cancelled"

    response = admin_client.post(
        "/admin/memory_app/workflowstate/",
        {"action": "cancel_runs", "_selected_action": [str(failed_run.pk)]},
        follow=True,
    )

    assert "already cancelled" in response.content.decode()
    assert HistoryRecord.objects.filter(workflow_id=failed_run.pk, action="workflow_cancelled").count() == 1


def test_restore_action_forks_from_the_chosen_snapshot(admin_client, failed_run, django_capture_on_commit_callbacks):
    first_step = failed_run.snapshots.get(sequence=2)  # right after "measure"

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/memory_app/workflowsnapshot/",
            {"action": "restore_and_rerun", "_selected_action": [str(first_step.pk)]},
        )

    failed_run.refresh_from_db()
    assert failed_run.status == "completed"
    restored = failed_run.snapshots.get(event="restored")
    assert restored.parent == first_step
    assert failed_run.snapshots.filter(sequence__lte=3).count() == 3


@pytest.fixture
def bound_book(run_inline, user, project) -> WorkflowState:
    run = run_inline(
        engine.workflow_start, user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a b c"}
    )
    run.refresh_from_db()
    assert run.data["book"] == "<a><b><c>"
    return run


def test_the_change_page_links_to_the_redirect_page_with_both_forms(admin_client, bound_book):
    page = admin_client.get(f"/admin/memory_app/workflowstate/{bound_book.pk}/change/").content.decode()
    redirect_url = f"/admin/memory_app/workflowstate/{bound_book.pk}/redirect/"

    response = admin_client.get(redirect_url)

    assert redirect_url in page
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="restore-form"' in body and 'id="redraw-form"' in body
    assert 'name="data_patch"' in body and 'name="prompt_extra"' in body


def test_the_redirect_page_redraws_a_panel_in_a_new_run(admin_client, bound_book, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/memory_app/workflowstate/{bound_book.pk}/redirect/",
            {"operation": "redraw", "panel": "3", "seed": "", "prompt_extra": "?"},
        )

    fork = WorkflowState.objects.get(forked_from=bound_book)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/memory_app/workflowstate/{fork.pk}/change/"
    assert (fork.status, fork.redraw_panel, fork.data["book"]) == ("completed", 3, "<a><b><c?>")


def test_the_redirect_page_restores_with_a_patch_and_preferences(
    admin_client, bound_book, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/memory_app/workflowstate/{bound_book.pk}/redirect/",
            {
                "operation": "restore",
                "step_index": "0",
                "rerun": "on",
                "data_patch": '{"text": "x y"}',
                "preferences": '{"pause_after": ["split"]}',
            },
        )

    assert response.status_code == 302
    bound_book.refresh_from_db()
    assert (bound_book.status, bound_book.current_step) == ("awaiting_input", "render")
    assert bound_book.data["segments"] == ["x", "y"]


@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"operation": "restore", "step_index": "0", "data_patch": "[1]"}, "A JSON object."),
        ({"operation": "restore", "step_index": "0", "data_patch": "{not json"}, "Not JSON"),
        ({"operation": "restore", "step_index": "0", "preferences": '{"pause_after": ["paint"]}'}, "Unknown step"),
        ({"operation": "redraw", "panel": "9"}, "has no panel 9"),
    ],
)
def test_the_redirect_page_refuses_bad_input_and_changes_nothing(admin_client, bound_book, form, said):
    before = (WorkflowState.objects.count(), HistoryRecord.objects.count(), bound_book.snapshots.count())

    response = admin_client.post(f"/admin/memory_app/workflowstate/{bound_book.pk}/redirect/", form)

    assert response.status_code == 200  # the forms again, with the error
    assert said in response.content.decode()
    assert (WorkflowState.objects.count(), HistoryRecord.objects.count(), bound_book.snapshots.count()) == before


def test_continue_action_goes_on_with_a_waiting_run(
    admin_client, run_inline, user, project, django_capture_on_commit_callbacks
):
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="three_steps",
        project_id="proj-001",
        data={"text": "a b"},
        preferences={"pause_after": ["measure"]},
    )
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/memory_app/workflowstate/", {"action": "continue_runs", "_selected_action": [str(run.pk)]}
        )

    run.refresh_from_db()
    assert run.status == "completed"

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

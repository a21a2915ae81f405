"""integrity_check on the projects' files: orphans (nothing live names them) are found and, with repair,
removed; missing files (a live run names them, storage lacks them) are reported and stay unrepaired."""

from __future__ import annotations

import datetime as dt
import io
import json
import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from memory_app.models import StorageDeletion, WorkflowState
from memory_app.services.operations import integrity_check
from memory_app.services.storage_integrity import storage_files_check
from tests.factories import ProjectFactory
from tests.memory_app.test_schedules import set_memory

pytestmark = pytest.mark.django_db


def store(name: str, *, age_seconds: int = 3600) -> str:
    saved = default_storage.save(name, ContentFile(b"png"))
    moment = (timezone.now() - dt.timedelta(seconds=age_seconds)).timestamp()
    os.utime(default_storage.path(saved), (moment, moment))
    return saved


def problems(check) -> list[tuple[str, str, bool]]:
    return sorted((problem.kind, problem.subject, problem.repaired) for problem in check.problems)


@pytest.fixture
def live(media):
    project = ProjectFactory(id="live-key", public_id="mine")
    run = WorkflowState.objects.create(
        workflow_type="comic_generation", project=project, owner=project.owner, status="completed"
    )
    folder = f"projects/live-key/images/{run.pk}"
    panels = [store(f"{folder}/panel_001.png"), store(f"{folder}/panel_002.png")]
    run.data = {"outputs": {"panels": panels, "pages": []}}
    run.save(update_fields=["data"])
    return project, run, folder


def test_a_clean_storage_has_no_problems(live):
    check = storage_files_check()
    assert (check.files, check.referenced, check.problems) == (2, 2, [])


def test_orphans_are_found_then_removed_and_missing_files_only_reported(live):
    _, run, folder = live
    dead_project = store("projects/gone-key/images/run/panel_001.png")
    dead_run = store("projects/live-key/images/00000000-0000-0000-0000-000000000000/panel_001.png")
    unnamed = store(f"{folder}/panel_099.png")
    young_unnamed = store(f"{folder}/panel_100.png", age_seconds=0)  # its writer may be recording it now
    dead_archive = store("history_archives/gone-key/history_202501-abc.jsonl.gz")
    elsewhere = store("projects/live-key/characters/hero.png")  # another kind of file: not judged
    default_storage.delete(run.data["outputs"]["panels"][1])
    missing = run.data["outputs"]["panels"][1]

    found = storage_files_check()
    assert problems(found) == sorted(
        [
            ("orphan_file", dead_project, False),
            ("orphan_file", dead_run, False),
            ("orphan_file", unnamed, False),
            ("orphan_file", dead_archive, False),
            ("missing_file", missing, False),
        ]
    )
    assert all(default_storage.exists(name) for name in (dead_project, dead_run, unnamed, dead_archive))

    repaired = storage_files_check(repair=True)
    assert [(kind, repaired_) for kind, _, repaired_ in problems(repaired)] == [
        ("missing_file", False),
        *[("orphan_file", True)] * 4,
    ]
    assert not any(default_storage.exists(name) for name in (dead_project, dead_run, unnamed, dead_archive))
    assert default_storage.exists(young_unnamed) and default_storage.exists(elsewhere)
    assert problems(storage_files_check()) == [("missing_file", missing, False)]


def test_files_a_pending_deletion_names_are_its_tasks_not_orphans(live):
    store("projects/gone-key/images/run/panel_001.png")
    StorageDeletion.objects.create(reason="project_deleted", subject="gone-key", folders=["projects/gone-key"])
    assert storage_files_check().problems == []


def test_the_files_of_expired_outputs_are_orphans_not_missing(live):
    _, run, _ = live
    WorkflowState.objects.filter(pk=run.pk).update(outputs_expired_at=timezone.now())
    check = storage_files_check()
    assert sorted(problem.kind for problem in check.problems) == ["orphan_file", "orphan_file"]
    assert check.referenced == 0


def test_the_command_reports_then_repairs(live, settings):
    set_memory(settings, "cache_options", orphan_grace_seconds=60)
    orphan = store("projects/gone-key/images/run/panel_001.png")

    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("integrity_check", stdout=out)
    assert exit_.value.code == 1
    assert f"FOUND orphan_file {orphan}: no live project has the key gone-key" in out.getvalue().splitlines()

    out = io.StringIO()
    call_command("integrity_check", "--repair", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["checked"]["project_files"] == 3 and report["checked"]["referenced_files"] == 2
    assert [(problem["kind"], problem["repaired"]) for problem in report["problems"]] == [("orphan_file", True)]
    assert not default_storage.exists(orphan)
    assert integrity_check().problems == []

"""Deleting projects in the admin is the service's delete: their files are written down and removed too."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from memory_app.models import Project, StorageDeletion
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_browser(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def test_deleting_one_project_removes_its_files(staff_browser, media, eager, django_capture_on_commit_callbacks):
    project = ProjectFactory(id="k-1")
    name = default_storage.save("projects/k-1/images/run/panel_001.png", ContentFile(b"png"))

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_browser.post(f"/admin/memory_app/project/{project.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Project.objects.filter(pk="k-1").exists()
    assert not default_storage.exists(name)
    assert StorageDeletion.objects.count() == 0


def test_deleting_a_selection_writes_each_projects_files_down(staff_browser, media):
    first, second, kept = ProjectFactory(id="k-1"), ProjectFactory(id="k-2"), ProjectFactory(id="k-3")

    response = staff_browser.post(
        "/admin/memory_app/project/",
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert list(Project.objects.values_list("pk", flat=True)) == [kept.pk]
    assert sorted(StorageDeletion.objects.values_list("subject", flat=True)) == ["k-1", "k-2"]

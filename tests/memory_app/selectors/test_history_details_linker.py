"""``history_details_linker``: a record's usual details are answered as they are; a storage name of the project
is renamed to its public id, an ``image_url`` of the record's run linked, in flat details as in nested ones."""

from __future__ import annotations

import uuid

import pytest

from memory_app.selectors.projects import history_details_linker
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def renamed(user):
    return ProjectFactory(id="k-internal", public_id="proj-009", owner=user)


def test_usual_details_are_answered_as_they_are(renamed):
    details = {"step": "image_generation", "segment": 3, "model": "offline", "ok": True, "none": None}

    assert history_details_linker(project=renamed)(details, None) is details


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"path": "projects/k-internal/images/x.png", "n": 1}, {"path": "projects/proj-009/images/x.png", "n": 1}),
        ({"path": "see projects/k-internal/a.txt"}, {"path": "see projects/proj-009/a.txt"}),
        ({"path": "projects/k-internal-other/a.txt"}, {"path": "projects/k-internal-other/a.txt"}),
        ({"list": ["projects/k-internal/a"]}, {"list": ["projects/proj-009/a"]}),
        (["projects/k-internal/a", 1], ["projects/proj-009/a", 1]),
        ("projects/k-internal/a", "projects/proj-009/a"),
    ],
)
def test_the_projects_storage_names_are_renamed_flat_or_nested(renamed, details, expected):
    assert history_details_linker(project=renamed)(details, None) == expected


def test_a_project_whose_key_is_its_public_id_keeps_its_names(project):
    details = {"path": "projects/proj-001/images/x.png"}

    assert history_details_linker(project=project)(details, None) == {"path": "projects/proj-001/images/x.png"}


def test_a_flat_image_url_of_the_records_run_is_linked(renamed):
    run = uuid.uuid4()
    details = {"image_url": f"/api/workflows/{run}/outputs/panel_1.png", "segment": 1}

    public = history_details_linker(project=renamed, absolute_url=lambda path: f"http://testserver{path}")(details, run)

    assert public["segment"] == 1
    assert public["image_url"] != details["image_url"]
    assert public["image_url"].startswith("http://testserver/api/files/")

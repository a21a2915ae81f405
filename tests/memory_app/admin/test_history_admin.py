from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from memory_app.models import HistoryRecord
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def staff_browser(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def records(project, user):
    return [
        HistoryRecordFactory(project=project, timestamp=at("2025-01-27T09:00:00"), action="project_created", user=user),
        HistoryRecordFactory(
            project=project, timestamp=at("2025-01-27T09:15:00"), action="text_analyzed", details={"model": "jieba"}
        ),
        HistoryRecordFactory(project=project, timestamp=at("2025-01-29T10:00:00"), action="text_analyzed"),
    ]


def test_the_changelist_filters_and_searches_details(staff_browser, records):
    listing = staff_browser.get("/admin/memory_app/historyrecord/")
    searched = staff_browser.get("/admin/memory_app/historyrecord/?q=jieba")
    filtered = staff_browser.get("/admin/memory_app/historyrecord/?action=project_created")
    by_day = staff_browser.get(
        "/admin/memory_app/historyrecord/?timestamp__year=2025&timestamp__month=1&timestamp__day=29"
    )

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == records[::-1]
    assert list(searched.context["cl"].result_list) == [records[1]]
    assert list(filtered.context["cl"].result_list) == [records[0]]
    assert list(by_day.context["cl"].result_list) == [records[2]]


def test_records_are_read_only_in_the_admin(staff_browser, records):
    record = records[0]

    change = staff_browser.post(f"/admin/memory_app/historyrecord/{record.pk}/change/", {"summary": "rewritten"})
    delete = staff_browser.post(f"/admin/memory_app/historyrecord/{record.pk}/delete/", {"post": "yes"})
    add = staff_browser.get("/admin/memory_app/historyrecord/add/")

    assert change.status_code == 403
    assert delete.status_code == 403
    assert add.status_code == 403
    record.refresh_from_db()
    assert record.summary == "Text analysed."
    assert HistoryRecord.objects.count() == 3


def test_the_timeline_page_groups_by_day_with_figures_and_a_chart(staff_browser, records):
    response = staff_browser.get("/admin/memory_app/historyrecord/timeline/proj-001/")

    assert response.status_code == 200
    assert response.context["summary"].total_actions == 3
    assert response.context["summary"].duration_days == 3
    assert [group["day"].isoformat() for group in response.context["days"]] == ["2025-01-27", "2025-01-29"]
    assert [bar["count"] for bar in response.context["chart"]["bars"]] == [2, 1]
    html = response.content.decode()
    assert '<span class="value" data-figure="total_actions">3</span>' in html
    assert '<span class="value" data-figure="most_common_action">text_analyzed</span>' in html
    assert html.count("<rect ") == 2


def test_the_timeline_page_of_an_unknown_project_is_a_404_page(staff_browser, db):
    response = staff_browser.get("/admin/memory_app/historyrecord/timeline/nope/")

    assert response.status_code == 404
    assert "Project &#x27;nope&#x27; does not exist." in response.content.decode()


def test_the_timeline_page_needs_a_staff_login(client, records):
    response = client.get("/admin/memory_app/historyrecord/timeline/proj-001/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_project_list_links_to_its_timeline(staff_browser, user):
    ProjectFactory(id="proj-042", owner=user)

    response = staff_browser.get("/admin/memory_app/project/")

    assert 'href="/admin/memory_app/historyrecord/timeline/proj-042/"' in response.content.decode()


def test_two_projects_of_one_id_are_told_apart_by_owner_and_each_timeline_is_its_own(staff_browser, user, other_user):
    from memory_app.services.projects import project_create

    alices = project_create(owner=user, project_id="alpha", name="Alice's comic")
    bobs = project_create(owner=other_user, project_id="alpha", name="Bob's comic")

    listing = staff_browser.get("/admin/memory_app/project/").content.decode()
    bob_page = staff_browser.get(f"/admin/memory_app/historyrecord/timeline/{bobs.pk}/")

    rows = [row for row in listing.split("<tr")[1:] if "alpha" in row]
    assert sorted(("alice" in row, "bob" in row) for row in rows) == [(False, True), (True, False)]
    assert f'href="/admin/memory_app/historyrecord/timeline/{alices.pk}/"' in listing
    assert bob_page.status_code == 200
    text = bob_page.content.decode()
    assert ("Timeline of alpha" in text, "Owner: bob" in text) == (True, True)
    assert ("Bob&#x27;s comic" in text, "Alice&#x27;s comic" in text) == (True, False)

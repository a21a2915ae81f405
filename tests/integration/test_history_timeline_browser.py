"""A staff member logs in through the admin form in headless Chromium and reads a project's timeline page."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.factories import HistoryRecordFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.integration


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def timeline_project(transactional_db):
    """Created before the browser starts: ORM calls made while Playwright's loop runs would use another connection."""
    owner = UserFactory(username="alice")
    UserFactory(username="staffer", is_staff=True, is_superuser=True)
    project = ProjectFactory(id="proj-001", owner=owner, name="Sky")
    specs = [
        ("2025-01-27T09:00:00", "project_created", "Project created."),
        ("2025-01-27T09:15:00", "text_analyzed", "Text analysed: 5000 characters."),
        ("2025-01-27T11:40:00", "text_analyzed", "Text analysed again."),
        ("2025-01-29T10:00:00", "workflow_started", "Comic generation started."),
    ]
    for when, action, summary in specs:
        HistoryRecordFactory(project=project, timestamp=at(when), action=action, summary=summary, user=owner)
    return project


# The order of the fixtures matters: the data and the live server exist before the browser starts.
def test_staff_log_in_and_read_a_projects_timeline(live_server, timeline_project, browser_page):
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/memory_app/historyrecord/timeline/proj-001/")
    page.fill("#id_username", "staffer")
    page.fill("#id_password", "pass-word-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/memory_app/historyrecord/timeline/proj-001/")

    assert page.locator("h1").inner_text() == "Timeline of proj-001"
    figures = {
        name: page.locator(f'[data-figure="{name}"]').inner_text()
        for name in ("total_actions", "duration_days", "most_common_action", "archived_actions")
    }
    assert figures == {
        "total_actions": "4",
        "duration_days": "3",
        "most_common_action": "text_analyzed",
        "archived_actions": "0",
    }
    bars = page.locator("#timeline-chart rect")
    assert bars.count() == 2
    assert [bars.nth(index).get_attribute("data-count") for index in range(2)] == ["3", "1"]
    assert [bars.nth(index).get_attribute("data-day") for index in range(2)] == ["2025-01-27", "2025-01-29"]
    days = page.locator("section.timeline-day")
    assert [days.nth(index).locator("h3").inner_text() for index in range(days.count())] == [
        "2025-01-27 (3)",
        "2025-01-29 (1)",
    ]
    first_day = days.nth(0).locator("li.timeline-entry")
    assert [first_day.nth(index).locator(".timeline-summary").inner_text() for index in range(3)] == [
        "Project created.",
        "Text analysed: 5000 characters.",
        "Text analysed again.",
    ]
    assert first_day.nth(0).locator("time").inner_text() == "09:00:00"
    assert page.locator("#timeline-next").count() == 0

"""``history_page_rows`` (the API's pages, one written-out SELECT) against ``history_page`` (the ORM's queryset):
the same records, in the same order, with the same cursors, whatever the filters."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from memory_app.models import SYSTEM_SCOPE, HistoryRecord
from memory_app.selectors.history import (
    HistoryRow,
    HistoryScope,
    history_filters_parse,
    history_page,
    history_page_rows,
    history_scope_get,
)
from memory_app.selectors.history_timeline import history_timeline_summary
from tests.factories import HistoryRecordFactory

pytestmark = pytest.mark.django_db

BASE = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
ACTIONS = ["project_created", "text_analyzed", "workflow_started", "workflow_step_completed", "workflow_completed"]


@pytest.fixture
def records(project, user, other_user):
    run = uuid.uuid4()
    made = []
    for index in range(40):
        made.append(
            HistoryRecordFactory(
                project=project,
                # Every fifth record shares its instant with the one before: the id breaks the tie.
                timestamp=BASE - dt.timedelta(hours=7 * index - (1 if index % 5 == 0 else 0)),
                action=ACTIONS[index % len(ACTIONS)],
                summary=f"record {index} 第{index}条",
                details={"step": "text_segmentation" if index % 2 else "image_generation", "n": index},
                user=(user, other_user, None)[index % 3],
                request_id=f"req-{index}" if index % 4 else "",
                workflow_id=run if index % 3 == 0 else None,
            )
        )
    HistoryRecordFactory(project=None, timestamp=BASE, action="cache_cleared", summary="system")
    return made


FILTERS = [
    {},
    {"action_type": "text_analyzed"},
    {"action_type": "workflow_started,workflow_completed"},
    {"start_date": "2025-02-25", "end_date": "2025-02-27"},
    {"start_date": "2025-02-24T05:00:00Z", "action_type": "text_analyzed,project_created"},
    {"end_date": "2025-02-26T23:00:00+08:00"},
    # Steps: a JSON key lookup, which goes through the ORM on both sides.
    {"action_type": "text_segmentation,workflow_started"},
]


def row_of(record: HistoryRecord) -> HistoryRow:
    return HistoryRow(
        record.pk,
        record.timestamp,
        record.action,
        record.summary,
        record.details,
        record.user_id,
        record.user.get_username() if record.user is not None else None,
        record.request_id,
        record.workflow_id,
    )


def walk_both(scope: HistoryScope, query: dict[str, str], order: str, limit: int) -> list[list[HistoryRow]]:
    filters = history_filters_parse(
        start_date=query.get("start_date"), end_date=query.get("end_date"), action_type=query.get("action_type")
    )
    pages: list[list[HistoryRow]] = []
    model_cursor = row_cursor = None
    while True:
        by_model = history_page(scope=scope, filters=filters, limit=limit, order=order, cursor=model_cursor)
        by_rows = history_page_rows(scope=scope, filters=filters, limit=limit, order=order, cursor=row_cursor)
        assert by_rows.rows == [row_of(record) for record in by_model.records]
        assert (by_rows.next_cursor is None) == (by_model.next_cursor is None)
        pages.append(by_rows.rows)
        if by_rows.next_cursor is None:
            return pages
        model_cursor, row_cursor = by_model.next_cursor, by_rows.next_cursor


@pytest.mark.parametrize("query", FILTERS)
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_rows_are_the_orms_records_page_after_page(records, user, query, order):
    scope = history_scope_get(user=user, project_id="proj-001")

    pages = walk_both(scope, query, order, limit=7)

    seen = [row.id for page in pages for row in page]
    assert len(seen) == len(set(seen))
    if not query:
        assert len(seen) == 40


def test_the_system_scope_reads_the_records_of_no_project(records, staff_user):
    scope = history_scope_get(user=staff_user, project_id=SYSTEM_SCOPE)

    (page,) = walk_both(scope, {}, "desc", limit=10)

    assert [row.summary for row in page] == ["system"]


@pytest.mark.parametrize("query", FILTERS)
def test_the_timelines_first_and_last_are_the_orms(records, user, query):
    scope = history_scope_get(user=user, project_id="proj-001")
    filters = history_filters_parse(
        start_date=query.get("start_date"), end_date=query.get("end_date"), action_type=query.get("action_type")
    )
    ascending = history_page(scope=scope, filters=filters, limit=1000, order="asc").records

    summary = history_timeline_summary(scope=scope, filters=filters)

    assert summary.total_actions == len(ascending)
    expected = (ascending[0].timestamp, ascending[-1].timestamp) if ascending else (None, None)
    assert (summary.first_timestamp, summary.last_timestamp) == expected


ODD_DETAILS = [
    {},
    {"text": "é 日本語 😀 \u2028", "quote": '"\\/', "nested": {"list": [1, 2.5, None, True, {"deep": []}]}},
    {"big": 2**62, "small": -(2**62), "float": 0.1, "exponent": 1e-7},
    ["a", "list"],
    "a string",
    12,
]
ODD_INSTANTS = [
    dt.datetime(2025, 3, 1, 12, 0, 0, 120000, tzinfo=dt.UTC),  # PostgreSQL writes ".12"
    dt.datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=dt.UTC),
    dt.datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.datetime(1, 1, 2, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 30, 23, 59, 59, tzinfo=dt.UTC),
    dt.datetime(99, 6, 1, 8, 0, tzinfo=dt.UTC),
]


def test_odd_details_and_instants_read_as_the_orm_reads_them(project, user):
    for index, instant in enumerate(ODD_INSTANTS):
        HistoryRecordFactory(project=project, timestamp=instant, summary=f"instant {index}", details={})
    for index, details in enumerate(ODD_DETAILS):
        HistoryRecordFactory(project=project, timestamp=BASE, summary=f"details {index}", details=details)
    scope = history_scope_get(user=user, project_id="proj-001")

    (page,) = walk_both(scope, {}, "desc", limit=100)

    assert len(page) == len(ODD_INSTANTS) + len(ODD_DETAILS)
    by_model = history_page(
        scope=scope, filters=history_filters_parse(start_date=None, end_date=None, action_type=None), limit=100
    )
    for row, record in zip(page, by_model.records, strict=True):
        # Equal instants, and the same time zone as the ORM's (equality of aware datetimes ignores it).
        assert (row.timestamp.tzinfo, row.timestamp.isoformat()) == (
            record.timestamp.tzinfo,
            record.timestamp.isoformat(),
        )
        assert row.details == record.details and type(row.details) is type(record.details)

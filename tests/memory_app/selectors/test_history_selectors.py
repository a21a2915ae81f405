from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_app.errors import ValidationFailed
from memory_app.selectors.history import (
    HistoryScope,
    _cursor_decode,
    history_filters_parse,
    parse_history_instant,
)

SCOPE = HistoryScope(key="proj-001", project=None)


@given(st.text(max_size=40))
def test_any_date_text_parses_or_is_a_400_naming_the_parameter(raw):
    try:
        parse_history_instant(raw, name="start_date", end_of_day=True)
    except ValidationFailed as exc:
        assert list(exc.details["fields"]) == ["start_date"]


@given(st.text(max_size=200))
def test_any_cursor_text_is_a_400_naming_cursor(raw):
    with pytest.raises(ValidationFailed) as caught:
        _cursor_decode(cursor=raw, scope=SCOPE, order="desc")

    assert list(caught.value.details["fields"]) == ["cursor"]


@pytest.mark.parametrize(
    ("raw", "end_of_day", "expected"),
    [
        ("2025-01-27", False, dt.datetime(2025, 1, 27, tzinfo=dt.UTC)),
        ("2025-01-27", True, dt.datetime(2025, 1, 28, tzinfo=dt.UTC)),
        ("2025-01-27T10:30:00", False, dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.UTC)),
        ("2025-01-27T10:30:00Z", True, dt.datetime(2025, 1, 27, 10, 30, 0, 1, tzinfo=dt.UTC)),
        ("2025-01-27T18:30:00+08:00", False, dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.UTC)),
        ("2025-01-27T18:30:00 08:00", False, dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.UTC)),  # '+' lost in a URL
        ("2025-01-27 10:30", False, dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.UTC)),
        ("", False, None),
        (None, False, None),
    ],
)
def test_dates_and_datetimes(raw, end_of_day, expected):
    assert parse_history_instant(raw, name="start_date", end_of_day=end_of_day) == expected


def test_several_actions_are_deduplicated_in_order():
    filters = history_filters_parse(
        start_date=None, end_date=None, action_type="text_analyzed, project_created,text_analyzed,"
    )

    assert filters.actions == ("text_analyzed", "project_created")

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
from django.core import signing
from django.core.files.storage import default_storage

from memory_app.models import HistoryArchive, HistoryRecord
from memory_app.services.history import history_archive_run
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def records(project, user):
    """Seven records over three days, two of them at the same instant (the id breaks the tie)."""
    specs = [
        ("2025-01-27T09:00:00", "project_created"),
        ("2025-01-27T09:15:00", "text_analyzed"),
        ("2025-01-27T09:15:00", "text_analyzed"),
        ("2025-01-28T10:00:00", "workflow_started"),
        ("2025-01-28T11:00:00", "text_analyzed"),
        ("2025-01-29T23:59:59.999999", "workflow_completed"),
        ("2025-01-29T08:00:00", "workflow_step_completed"),
    ]
    return [
        HistoryRecordFactory(
            project=project, timestamp=at(when), action=action, summary=f"{action} #{index}", user=user
        )
        for index, (when, action) in enumerate(specs)
    ]


def ids(response) -> list[int]:
    return [record["id"] for record in response.json()["data"]["records"]]


def newest_first(records) -> list[int]:
    return [record.pk for record in sorted(records, key=lambda record: (record.timestamp, record.pk), reverse=True)]


def test_history_is_newest_first_with_every_field(auth_client, records):
    response = auth_client.get("/api/memory/history/proj-001")

    assert response.status_code == 200
    data = response.json()["data"]
    assert ids(response) == newest_first(records)
    assert (data["project_id"], data["count"], data["limit"], data["order"]) == ("proj-001", 7, 50, "desc")
    assert (data["next_cursor"], data["has_more"]) == (None, False)
    assert data["records"][0] == {
        "id": records[5].pk,
        "timestamp": "2025-01-29T23:59:59.999999Z",
        "action": "workflow_completed",
        "summary": "workflow_completed #5",
        "details": {},
        "user_id": records[5].user_id,
        "username": "alice",
        "request_id": "",
        "workflow_id": None,
    }


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_cursor_pages_cover_every_record_once_in_order(auth_client, records, order):
    seen, cursor, pages = [], None, 0
    while True:
        query = f"?limit=2&order={order}" + (f"&cursor={cursor}" if cursor else "")
        data = auth_client.get(f"/api/memory/history/proj-001{query}").json()["data"]
        seen.extend(record["id"] for record in data["records"])
        pages += 1
        cursor = data["next_cursor"]
        if not cursor:
            break

    expected = newest_first(records)
    assert seen == (expected if order == "desc" else expected[::-1])
    assert pages == 4


def test_a_record_added_while_paging_does_not_shift_the_pages(auth_client, project, records):
    first = auth_client.get("/api/memory/history/proj-001?limit=3").json()["data"]
    HistoryRecordFactory(project=project, timestamp=at("2025-02-01T00:00:00"))

    second = auth_client.get(f"/api/memory/history/proj-001?limit=3&cursor={first['next_cursor']}").json()["data"]

    assert [record["id"] for record in first["records"] + second["records"]] == newest_first(records)[:6]


def test_filters_by_date_range_and_action(auth_client, records):
    by_day = auth_client.get("/api/memory/history/proj-001?start_date=2025-01-28&end_date=2025-01-28")
    by_datetime = auth_client.get(
        "/api/memory/history/proj-001?start_date=2025-01-27T09:15:00Z&end_date=2025-01-28T10:00:00%2B00:00"
    )
    by_action = auth_client.get("/api/memory/history/proj-001?action_type=text_analyzed")
    by_two = auth_client.get("/api/memory/history/proj-001?action_type=project_created,workflow_started&order=asc")

    assert ids(by_day) == [records[4].pk, records[3].pk]
    assert ids(by_datetime) == [records[3].pk, records[2].pk, records[1].pk]
    assert ids(by_action) == [records[4].pk, records[2].pk, records[1].pk]
    assert ids(by_two) == [records[0].pk, records[3].pk]


def test_a_datetime_offset_is_honoured(auth_client, records):
    # 2025-01-28T18:00+08:00 is 10:00 UTC: the bound is inclusive.
    response = auth_client.get(
        "/api/memory/history/proj-001?start_date=2025-01-28T18:00:00%2B08:00&action_type=workflow_started"
    )

    assert ids(response) == [records[3].pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start_date=yesterday", "start_date"),
        ("end_date=2025-13-01", "end_date"),
        ("start_date=2025-01-28&end_date=2025-01-27", "end_date"),
        ("start_date=2025-01-28T10:00:00&end_date=2025-01-28T09:59:59", "end_date"),
        ("end_date=9999-12-31", "end_date"),
        ("end_date=9999-12-31T23:59:59.999999", "end_date"),
        ("start_date=2025-02-30", "start_date"),
        ("start_date=2025-01-27T10:30:00%2B99:00", "start_date"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("action_type=made_up", "action_type"),
        ("order=sideways", "order"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(auth_client, records, query, field):
    response = auth_client.get(f"/api/memory/history/proj-001?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]["fields"]) == [field]


def test_a_tampered_or_foreign_cursor_is_400(auth_client, client_for, user, project, records):
    ProjectFactory(id="proj-002", owner=user)
    cursor = auth_client.get("/api/memory/history/proj-001?limit=2").json()["data"]["next_cursor"]
    payload = signing.loads(cursor, salt="memory_app.history.cursor")
    forged = signing.dumps({**payload, "i": payload["i"] + 1}, salt="wrong-salt")

    tampered = auth_client.get(f"/api/memory/history/proj-001?cursor={cursor[:-2]}xx")
    wrong_salt = auth_client.get(f"/api/memory/history/proj-001?cursor={forged}")
    other_project = auth_client.get(f"/api/memory/history/proj-002?cursor={cursor}")
    other_order = auth_client.get(f"/api/memory/history/proj-001?order=asc&cursor={cursor}")

    for response in (tampered, wrong_salt, other_project, other_order):
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]["fields"]) == ["cursor"]


@pytest.mark.parametrize("path", ["/api/memory/history/", "/api/memory/timeline/"])
def test_someone_elses_or_unknown_project_is_404(auth_client, other_user, path):
    theirs = ProjectFactory(id="theirs", owner=other_user)
    HistoryRecordFactory(project=theirs)

    for project_id in ("theirs", "nope", "_system"):
        response = auth_client.get(f"{path}{project_id}")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "MEMORY_NOT_FOUND"
        assert error["details"]["project_id"] == project_id
        assert "suggestion" in error["details"]


def test_staff_see_any_project_and_the_system_wide_records(staff_client, records):
    system = HistoryRecordFactory(project=None, action="cache_cleared", summary="images cleared")

    project_page = staff_client.get("/api/memory/history/proj-001")
    system_page = staff_client.get("/api/memory/history/_system/")

    assert ids(project_page) == newest_first(records)
    assert ids(system_page) == [system.pk]


def test_anonymous_is_401(api_client, records):
    response = api_client.get("/api/memory/history/proj-001")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_history_and_timeline_write_timestamps_in_the_current_time_zone(auth_client, records, settings):
    settings.TIME_ZONE = "Asia/Shanghai"

    page = auth_client.get("/api/memory/history/proj-001").json()["data"]["records"]
    timeline = auth_client.get("/api/memory/timeline/proj-001").json()["data"]["timeline"]

    # As DRF's DateTimeField writes them: the zone's offset, microseconds only when there are some.
    assert [record["timestamp"] for record in page[:2]] == [
        "2025-01-30T07:59:59.999999+08:00",
        "2025-01-29T16:00:00+08:00",
    ]
    assert timeline[0]["timestamp"] == "2025-01-27T17:00:00+08:00"


def test_timeline_is_chronological_with_a_database_summary(auth_client, records, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        response = auth_client.get("/api/memory/timeline/proj-001")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["project_id"] == "proj-001"
    assert [entry["id"] for entry in data["timeline"]] == newest_first(records)[::-1]
    assert data["timeline"][0] == {
        "id": records[0].pk,
        "timestamp": "2025-01-27T09:00:00Z",
        "action": "project_created",
        "summary": "project_created #0",
        "details": {},
    }
    assert data["summary"] == {
        "total_actions": 7,
        "duration_days": 3,
        "most_common_action": "text_analyzed",
        "first_timestamp": "2025-01-27T09:00:00Z",
        "last_timestamp": "2025-01-29T23:59:59.999999Z",
        "archived_actions": 0,
    }
    assert data["generated_at"].endswith("Z")


def test_timeline_summary_follows_the_filters_and_pages_like_history(auth_client, records):
    first = auth_client.get("/api/memory/timeline/proj-001?start_date=2025-01-28&limit=2").json()["data"]
    second = auth_client.get(
        f"/api/memory/timeline/proj-001?start_date=2025-01-28&limit=2&cursor={first['next_cursor']}"
    ).json()["data"]

    assert [entry["id"] for entry in first["timeline"] + second["timeline"]] == [
        records[3].pk,
        records[4].pk,
        records[6].pk,
        records[5].pk,
    ]
    assert second["next_cursor"] is None
    assert first["summary"]["total_actions"] == 4
    assert first["summary"]["duration_days"] == 2
    # A tie (one of each action) goes to the first name alphabetically.
    assert first["summary"]["most_common_action"] == "text_analyzed"


def test_timeline_of_an_empty_project(auth_client, project):
    data = auth_client.get("/api/memory/timeline/proj-001").json()["data"]

    assert data["timeline"] == []
    assert data["summary"] == {
        "total_actions": 0,
        "duration_days": 0,
        "most_common_action": None,
        "first_timestamp": None,
        "last_timestamp": None,
        "archived_actions": 0,
    }


def test_the_summary_costs_the_same_queries_for_ten_or_three_hundred_records(
    auth_client, project, django_assert_num_queries, django_assert_max_num_queries
):
    HistoryRecordFactory.create_batch(10, project=project)
    with django_assert_max_num_queries(8) as small:
        auth_client.get("/api/memory/timeline/proj-001?limit=1")
    HistoryRecordFactory.create_batch(290, project=project)
    with django_assert_num_queries(len(small.captured_queries)):
        response = auth_client.get("/api/memory/timeline/proj-001?limit=1")

    assert response.json()["data"]["summary"]["total_actions"] == 300


# --- archives ---------------------------------------------------------------------------------------------------


@pytest.fixture
def archived(settings, tmp_path, project):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    old = [
        HistoryRecordFactory(project=project, timestamp=at("2024-01-05T08:00:00")),
        HistoryRecordFactory(project=project, timestamp=at("2024-01-06T08:00:00")),
    ]
    history_archive_run(now=at("2025-01-01T00:00:00"))
    return old


def test_staff_list_a_projects_archives(staff_client, archived):
    response = staff_client.get("/api/memory/history/proj-001/archives")

    assert response.status_code == 200
    (archive,) = response.json()["data"]["archives"]
    manifest = HistoryArchive.objects.get()
    assert archive["id"] == manifest.pk
    assert (archive["month"], archive["record_count"], archive["compressed"]) == ("202401", 2, True)
    assert archive["checksum"] == manifest.checksum
    assert archive["download_url"] == f"/api/memory/history/proj-001/archives/{manifest.pk}"
    assert archive["download_name"] == "proj-001-history_202401.jsonl.gz"


def test_the_archives_of_a_project_with_a_generated_key_are_named_by_its_public_id(
    staff_client, settings, tmp_path, user
):
    from memory_app.services.projects import project_create

    settings.MEDIA_ROOT = str(tmp_path / "media")
    project = project_create(owner=user, project_id="alpha", name="Alpha")
    HistoryRecordFactory(project=project, timestamp=at("2024-01-05T08:00:00"))
    history_archive_run(now=at("2025-01-01T00:00:00"))
    manifest = HistoryArchive.objects.get()

    listed = staff_client.get("/api/memory/history/alpha/archives")
    (archive,) = listed.json()["data"]["archives"]
    downloaded = staff_client.get(archive["download_url"], HTTP_ACCEPT="*/*")

    assert (manifest.scope, listed.json()["data"]["project_id"]) == (project.pk, "alpha")
    assert archive["download_url"] == f"/api/memory/history/alpha/archives/{manifest.pk}"
    assert archive["download_name"] == "alpha-history_202401.jsonl.gz"
    assert project.pk not in listed.content.decode()
    assert downloaded.status_code == 200
    assert 'filename="alpha-history_202401.jsonl.gz"' in downloaded["Content-Disposition"]


def test_staff_download_an_archive_streamed_from_storage(staff_client, archived):
    manifest = HistoryArchive.objects.get()

    response = staff_client.get(f"/api/memory/history/proj-001/archives/{manifest.pk}", HTTP_ACCEPT="*/*")

    assert response.status_code == 200
    assert response.streaming is True
    assert response["Content-Type"] == "application/gzip"
    assert response["Content-Disposition"] == 'attachment; filename="proj-001-history_202401.jsonl.gz"'
    lines = gzip.decompress(b"".join(response.streaming_content)).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [record.pk for record in archived]


@pytest.mark.parametrize("archive_id", ["999999", "history_202401.jsonl.gz", "1e3", "-1", "9" * 30])
def test_an_unknown_archive_is_404(staff_client, archived, archive_id):
    response = staff_client.get(f"/api/memory/history/proj-001/archives/{archive_id}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"
    assert response.json()["error"]["details"]["archive_id"] == archive_id[:64]


def test_a_path_in_place_of_an_archive_id_matches_no_route(staff_client, archived):
    response = staff_client.get("/api/memory/history/proj-001/archives/..%2F..%2Fsettings.py")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_an_archive_is_only_found_under_its_own_project(staff_client, archived, other_user):
    ProjectFactory(id="proj-009", owner=other_user)
    manifest = HistoryArchive.objects.get()

    response = staff_client.get(f"/api/memory/history/proj-009/archives/{manifest.pk}")

    assert response.status_code == 404


def test_a_missing_archive_file_is_404_not_500(staff_client, archived):
    manifest = HistoryArchive.objects.get()
    default_storage.delete(manifest.file_name)

    response = staff_client.get(f"/api/memory/history/proj-001/archives/{manifest.pk}")

    assert response.status_code == 404
    assert response.json()["error"]["details"]["archive_id"] == manifest.pk


def test_the_owner_lists_and_downloads_their_projects_archives(auth_client, archived):
    manifest = HistoryArchive.objects.get()

    listed = auth_client.get("/api/memory/history/proj-001/archives")
    downloaded = auth_client.get(f"/api/memory/history/proj-001/archives/{manifest.pk}", HTTP_ACCEPT="*/*")

    assert listed.status_code == 200
    (archive,) = listed.json()["data"]["archives"]
    assert (archive["id"], archive["record_count"]) == (manifest.pk, 2)
    assert downloaded.status_code == 200
    assert downloaded.streaming is True
    assert downloaded["Content-Disposition"] == 'attachment; filename="proj-001-history_202401.jsonl.gz"'
    lines = gzip.decompress(b"".join(downloaded.streaming_content)).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [record.pk for record in archived]


@pytest.mark.parametrize("suffix", ["archives", "archives/{pk}"])
def test_another_users_project_archives_are_404(other_client, archived, suffix):
    manifest = HistoryArchive.objects.get()

    response = other_client.get(f"/api/memory/history/proj-001/{suffix.format(pk=manifest.pk)}", HTTP_ACCEPT="*/*")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"


def test_a_strangers_own_project_of_the_same_id_shows_none_of_the_owners_archives(other_client, archived, other_user):
    from memory_app.services.projects import project_create

    project_create(owner=other_user, project_id="proj-001", name="Bob's")
    manifest = HistoryArchive.objects.get()

    listed = other_client.get("/api/memory/history/proj-001/archives")
    downloaded = other_client.get(f"/api/memory/history/proj-001/archives/{manifest.pk}", HTTP_ACCEPT="*/*")

    assert (listed.status_code, listed.json()["data"]["archives"]) == (200, [])
    assert downloaded.status_code == 404


@pytest.mark.parametrize("suffix", ["archives", "archives/1"])
def test_the_system_scopes_archives_are_staff_only(auth_client, suffix):
    response = auth_client.get(f"/api/memory/history/_system/{suffix}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"


def test_anonymous_callers_see_no_archives(api_client, archived):
    response = api_client.get("/api/memory/history/proj-001/archives")

    assert response.status_code in (401, 403)
    assert response.json()["success"] is False


def test_the_timeline_counts_archived_records(auth_client, archived):
    summary = auth_client.get("/api/memory/timeline/proj-001").json()["data"]["summary"]

    assert summary["archived_actions"] == 2
    assert HistoryRecord.objects.filter(project_id="proj-001").count() == 1  # the history_archived note
    assert summary["total_actions"] == 2 + 1
    assert (summary["first_timestamp"], summary["most_common_action"]) == ("2024-01-05T08:00:00Z", "text_analyzed")


def test_the_schema_describes_history_pages_and_the_binary_download(api_client):
    import yaml

    schema = yaml.safe_load(api_client.get("/api/schema/").content)

    history = schema["paths"]["/api/memory/history/{project_id}/"]["get"]["responses"]["200"]
    assert history["content"]["application/json"]["schema"]["properties"]["data"]["$ref"] == (
        "#/components/schemas/HistoryPage"
    )
    download = schema["paths"]["/api/memory/history/{project_id}/archives/{archive_id}/"]["get"]["responses"]
    assert download["200"]["content"] == {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
    assert "ErrorEnvelope" in download["404"]["content"]["application/json"]["schema"]["$ref"]


def test_the_timeline_answers_the_same_counts_before_and_after_archiving(auth_client, project, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    for day, action in [("05", "text_analyzed"), ("05", "workflow_started"), ("06", "text_analyzed")]:
        HistoryRecordFactory(project=project, timestamp=at(f"2024-01-{day}T08:00:00"), action=action)
    HistoryRecordFactory(project=project, timestamp=at("2024-12-30T08:00:00"), action="workflow_started")
    query = "/api/memory/timeline/proj-001?action_type=text_analyzed,workflow_started&start_date=2024-01-05T09:00:00"
    before = auth_client.get(query).json()["data"]["summary"]

    history_archive_run(now=at("2025-01-01T00:00:00"))
    after = auth_client.get(query).json()["data"]["summary"]

    assert HistoryRecord.objects.filter(project=project, action="text_analyzed").count() == 0
    assert before == {**after, "archived_actions": 0}
    assert (after["total_actions"], after["archived_actions"], after["duration_days"]) == (2, 1, 360)
    assert after["first_timestamp"] == "2024-01-06T08:00:00Z"


def test_an_owners_unknown_archive_is_a_404_that_names_the_public_id_only(auth_client, settings, tmp_path, user):
    from memory_app.services.projects import project_create

    settings.MEDIA_ROOT = str(tmp_path / "media")
    project = project_create(owner=user, project_id="alpha", name="Alpha")

    response = auth_client.get("/api/memory/history/alpha/archives/999999")

    assert response.status_code == 404
    assert (
        response.json()["error"]["details"]["suggestion"] == "List the archives at /api/memory/history/alpha/archives."
    )
    assert project.pk not in response.content.decode()


# --- the pages' cost and their serializers ------------------------------------------------------------------------


def test_a_history_page_is_three_statements_however_many_records(auth_client, records, django_assert_num_queries):
    HistoryRecordFactory.create_batch(60, project=records[0].project)
    # The token with its user, the project, the page (users' names joined): nothing per record.
    with django_assert_num_queries(3):
        first = auth_client.get("/api/memory/history/proj-001?limit=50")
    with django_assert_num_queries(3):
        auth_client.get(f"/api/memory/history/proj-001?limit=50&cursor={first.json()['data']['next_cursor']}")
    with django_assert_num_queries(3):
        auth_client.get(
            "/api/memory/history/proj-001?action_type=text_analyzed&start_date=2025-01-27&end_date=2025-01-28"
        )


def test_the_timeline_is_seven_statements(auth_client, records, django_assert_num_queries):
    # Page (3 as above), the daily counts, the first and the last record, the archived counts.
    with django_assert_num_queries(7):
        auth_client.get("/api/memory/timeline/proj-001")


def test_the_pages_answer_what_their_serializers_describe(auth_client, user, other_user):
    from memory_app.api.history import HistoryRecordSerializer, TimelineEntrySerializer

    project = ProjectFactory(id="k-internal", public_id="proj-009", owner=user)
    run = "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
    made = [
        HistoryRecordFactory(
            project=project,
            timestamp=at("2025-02-01T10:00:00.123456"),
            action="image_generated",
            details={
                "image_url": f"/api/workflows/{run}/outputs/panel_001.png",
                "path": "projects/k-internal/images/x.png",
                "nested": [{"image_url": "projects/k-internal/images/other-run/p.png"}, 3, None],
            },
            user=user,
            request_id="req-1",
            workflow_id=run,
        ),
        HistoryRecordFactory(project=project, timestamp=at("2025-02-01T11:00:00"), user=None, details={}),
        HistoryRecordFactory(project=project, timestamp=at("2025-02-02T11:00:00"), user=other_user, details=[1]),
    ]
    records = HistoryRecord.objects.filter(pk__in=[record.pk for record in made]).select_related("user")
    newest_first = sorted(records, key=lambda record: (record.timestamp, record.pk), reverse=True)

    history = auth_client.get("/api/memory/history/proj-009").json()["data"]["records"]
    timeline = auth_client.get("/api/memory/timeline/proj-009").json()["data"]["timeline"]

    request = auth_client.get("/api/memory/history/proj-009").wsgi_request
    context = {"project": project, "request": request}
    described = json.loads(json.dumps(HistoryRecordSerializer(newest_first, many=True, context=context).data))
    described_timeline = TimelineEntrySerializer(newest_first[::-1], many=True, context=context).data
    # The signed links carry a time stamp: compared without their query strings.
    assert _without_signatures(history) == _without_signatures(described)
    assert _without_signatures(timeline) == _without_signatures(json.loads(json.dumps(described_timeline)))
    assert history[-1]["details"]["path"] == "projects/proj-009/images/x.png"
    assert "/api/files/" in history[-1]["details"]["image_url"]


def _without_signatures(value):
    if isinstance(value, dict):
        return {key: _without_signatures(entry) for key, entry in value.items()}
    if isinstance(value, list):
        return [_without_signatures(entry) for entry in value]
    if isinstance(value, str) and "/api/files/" in value:
        return value.split("?", 1)[0]
    return value

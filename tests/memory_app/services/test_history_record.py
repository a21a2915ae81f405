from __future__ import annotations

import pytest
from django.db import transaction

from memory_app.errors import ValidationFailed
from memory_app.models import HistoryAction, HistoryRecord
from memory_app.services.history import history_record
from memory_app.services.projects import project_create

pytestmark = pytest.mark.django_db


def test_record_redacts_sensitive_keys_at_any_depth_and_case(project, user):
    record = history_record(
        project=project,
        action=HistoryAction.TEXT_ANALYZED,
        user=user,
        details={
            "API_KEY": "sk-1",
            "nested": [{"userToken": "t-2", "max_tokens": 100, "token_count": 7}],
            "Authorization": "Bearer x",
            "deep": {"a": {"b": {"Password": "p", "personal_info": {"phone": "1"}}}},
            "access_token": "a",
            "ok": "kept",
        },
    )

    record.refresh_from_db()
    assert record.details == {
        "API_KEY": "[REDACTED]",
        "nested": [{"userToken": "[REDACTED]", "max_tokens": 100, "token_count": 7}],
        "Authorization": "[REDACTED]",
        "deep": {"a": {"b": {"Password": "[REDACTED]", "personal_info": "[REDACTED]"}}},
        "access_token": "[REDACTED]",
        "ok": "kept",
    }
    assert record.user == user
    assert record.summary == "Text analysed."


def test_configured_extra_names_are_redacted(project, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"history": settings.MEMORY.history.model_copy(update={"redact_extra_fields": ["phone"]})}
    )

    record = history_record(project=project, action="text_analyzed", details={"Phone": "123", "name": "x"})

    assert record.details == {"Phone": "[REDACTED]", "name": "x"}


def test_oversized_values_are_cut_with_a_marker(project):
    record = history_record(project=project, action="text_analyzed", details={"text": "字" * 5000})

    assert record.details["text"].startswith("字" * 4000)
    assert record.details["text"].endswith("…[TRUNCATED: 1000 more chars]")


def test_unknown_action_is_refused_and_nothing_written(project):
    before = HistoryRecord.objects.count()

    with pytest.raises(ValidationFailed):
        history_record(project=project, action="made_up", details={})

    assert HistoryRecord.objects.count() == before


def test_record_rolls_back_with_its_transaction(project):
    before = HistoryRecord.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        history_record(project=project, action="text_analyzed", details={})
        raise RuntimeError("abort")

    assert HistoryRecord.objects.count() == before


def test_records_are_append_only(project):
    record = history_record(project=project, action="text_analyzed", details={})

    with pytest.raises(TypeError):
        record.save()
    with pytest.raises(TypeError):
        HistoryRecord.objects.filter(pk=record.pk).update(summary="changed")
    record.refresh_from_db()
    assert record.summary == "Text analysed."


def test_project_creation_is_recorded_once(user):
    project = project_create(owner=user, name="Sky", project_id="proj-sky")

    records = list(HistoryRecord.objects.filter(project=project))
    assert [(record.action, record.summary, record.user) for record in records] == [
        ("project_created", "Project 'Sky' created.", user)
    ]


def test_request_id_of_the_api_call_is_stored(auth_client):
    auth_client.post("/api/projects/", {"id": "proj-r", "name": "R"}, format="json", HTTP_X_REQUEST_ID="req-abc")

    assert HistoryRecord.objects.get(project__public_id="proj-r").request_id == "req-abc"

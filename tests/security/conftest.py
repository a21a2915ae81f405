"""Two users and everything one of them owns, for the isolation matrix and the fuzzing run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from memory_app.models import HistoryArchive, WebhookDelivery, WebhookEndpoint, WorkflowState
from memory_app.services.cache import cache_set
from memory_app.services.character_references import character_reference_add
from memory_app.services.characters import character_create
from memory_app.services.conversation import NewMessage, context_append, context_create, context_release
from memory_app.services.creative import character_upsert, style_create, style_rate
from memory_app.services.history import history_archive_run
from memory_app.services.workflow import workflow_create
from tests.factories import HistoryRecordFactory, ProjectFactory, UserFactory

PANEL = b"\x89PNG\r\n\x1a\n" + b"alice's panel"


def _png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    output = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(output, format="PNG")
    return output.getvalue()


REFERENCE_PNG = _png((200, 30, 30))


@dataclass
class World:
    """Alice's objects (the targets) and Bob's own project (what Bob may legitimately name)."""

    alice: object
    bob: object
    project_id: str
    bob_project_id: str
    context_id: str
    workflow_id: str
    character_id: int
    bob_character_id: int
    reference_id: int
    style_id: str
    archive_id: int
    output_name: str
    output_path: str
    released_context_id: str
    webhook_id: int


@pytest.fixture
def world(db, settings, tmp_path) -> World:
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = str(media)
    settings.CACHE_DIR = tmp_path / "cache"
    Path(settings.CACHE_DIR).mkdir()

    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    project = ProjectFactory(id="alice-comic", owner=alice, name="Alice's comic", description="private plot")
    bob_project = ProjectFactory(id="bob-comic", owner=bob, name="Bob's comic")

    context = context_create(owner=alice, project=project, context_type="chat", metadata={"topic": "secret"})
    context_append(
        context=context,
        messages=[NewMessage(role="system", content="You draw."), NewMessage(role="user", content="alice secret")],
    )

    old = dt.datetime(2024, 1, 5, 8, tzinfo=dt.UTC)
    HistoryRecordFactory(project=project, timestamp=old, summary="alice archived")
    HistoryRecordFactory(project=project, timestamp=old + dt.timedelta(days=1), summary="alice archived too")
    history_archive_run(now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    archive = HistoryArchive.objects.get(scope=project.pk)

    run = workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=alice,
        steps=["text_segmentation", "quality_control"],
        data={"text": "alice secret text"},
        preferences={},
    )
    output_path = f"projects/{project.pk}/images/{run.pk}/panel_001.png"
    default_storage.save(output_path, ContentFile(PANEL))
    WorkflowState.objects.filter(pk=run.pk).update(
        status="failed", data={"text": "alice secret text", "outputs": {"panels": [output_path], "pages": []}}
    )

    character, _ = character_upsert(
        project=project,
        name="AliceHero",
        appearance_features={"hair": "red"},
        consistent_features=["scar"],
        personality_traits=["brave"],
        colors={"hair": "#ff0000"},
    )
    reference, _ = character_reference_add(user=alice, character=character, data=REFERENCE_PNG)
    bob_character = character_create(user=bob, project=bob_project, name="BobHero")
    style = style_create(user=alice, template_id="alice_noir", name="Alice noir", prompt="noir")
    style_rate(style=style, project=project, user=alice, score=4.0)
    cache_set(namespace="text_analysis", key={"text": "alice"}, value={"result": 1})
    # A context of Alice's the release task exported and removed (restorable by her alone).
    released = context_create(owner=alice, project=project, context_type="old")
    context_append(context=released, messages=[NewMessage(role="user", content="alice secret, released")])
    released.refresh_from_db()
    assert context_release(context=released, reason="inactive")
    # Alice's webhook and one message to it (written as the service writes them; its URL names her project).
    webhook = WebhookEndpoint.objects.create(
        owner=alice, project=project, url="https://alice-comic.example/hook", events=["*"], secret="whsec_YWxpY2U="
    )
    WebhookDelivery.objects.create(
        endpoint=webhook, message_id="msg_alice", event="workflow.failed", body={"data": {"note": "alice secret"}}
    )

    return World(
        alice=alice,
        bob=bob,
        project_id=project.public_id,
        bob_project_id=bob_project.public_id,
        context_id=str(context.pk),
        workflow_id=str(run.pk),
        character_id=character.pk,
        bob_character_id=bob_character.pk,
        reference_id=reference.pk,
        style_id=style.public_id,
        archive_id=archive.pk,
        output_name="panel_001.png",
        output_path=output_path,
        released_context_id=str(released.pk),
        webhook_id=webhook.pk,
    )


@pytest.fixture
def wsgi_requests(db):
    """The project's WSGI application, minus the per-request connection closing that Django's own test client
    also switches off: the test's transaction lives on the connection the requests use."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(db) -> str:
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=UserFactory(username="fuzz-staff", is_staff=True))
    return token.key


def database_fingerprint() -> dict[str, list]:
    """Every row of every memory table, and every stored file: equal before and after means nothing changed."""
    from django.apps import apps

    rows: dict[str, list] = {}
    for model in apps.get_app_config("memory_app").get_models():
        if model.__name__ in {"CacheStatistics", "MetricSnapshot"}:
            continue  # counters written by reads and by the clock, not by a request's effects
        rows[model._meta.label] = sorted((dict(row) for row in model.objects.values()), key=repr)
    media = Path(default_storage.location)
    rows["storage"] = sorted(str(path.relative_to(media)) for path in media.rglob("*") if path.is_file())
    return rows

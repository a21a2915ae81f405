"""/api/webhooks/ for their owner: create (the secret once), list, read, PATCH, DELETE, the delivery log; bad
input is a 400 that changes nothing."""

from __future__ import annotations

import base64

import pytest

from memory_app import safe_fetch
from memory_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.factories import ProjectFactory
from tests.security.conftest import database_fingerprint

pytestmark = pytest.mark.django_db

PUBLIC_HOOK = "https://hooks.example/comicmem"


@pytest.fixture(autouse=True)
def names(monkeypatch):
    """``hooks.example`` resolves to a public address, ``intranet.example`` to a private one; no DNS is asked."""
    real_resolve = safe_fetch._resolve
    table = {
        "hooks.example": ["93.184.216.34"],
        "intranet.example": ["10.0.0.7"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"],
    }

    def resolve(host: str, port: int) -> list[str]:
        return table[host] if host in table else real_resolve(host, port)

    monkeypatch.setattr(safe_fetch, "_resolve", resolve)


def create(client, **fields):
    body = {"url": PUBLIC_HOOK, "events": ["workflow.completed", "panel.ready"], **fields}
    return client.post("/api/webhooks/", body, format="json")


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response.json()["success"] is False
    return response.json()["error"]


def test_creation_answers_the_secret_once_in_the_form_the_libraries_take(auth_client, user, project):
    response = create(auth_client, project_id="proj-001")

    assert response.status_code == 201, response.content
    created = response.json()["data"]
    assert created["url"] == PUBLIC_HOOK
    assert created["events"] == ["workflow.completed", "panel.ready"]
    assert (created["project_id"], created["enabled"], created["consecutive_failures"]) == ("proj-001", True, 0)
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    endpoint = WebhookEndpoint.objects.get(pk=created["webhook_id"])
    assert (endpoint.owner, endpoint.project, endpoint.secret) == (user, project, created["secret"])

    detail = auth_client.get(f"/api/webhooks/{created['webhook_id']}/").json()["data"]
    listed = auth_client.get("/api/webhooks/").json()["data"]["results"]
    assert "secret" not in detail
    assert [item["webhook_id"] for item in listed] == [created["webhook_id"]]
    assert "secret" not in listed[0]
    assert created["secret"] not in auth_client.get("/api/webhooks/").content.decode()


def test_without_a_project_the_endpoint_takes_every_project_and_star_every_event(auth_client):
    created = create(auth_client, events=["*"]).json()["data"]

    assert (created["project_id"], created["events"]) == (None, ["*"])


def test_patch_changes_url_events_and_enabled_and_enabling_starts_the_count_again(auth_client):
    webhook_id = create(auth_client).json()["data"]["webhook_id"]
    WebhookEndpoint.objects.filter(pk=webhook_id).update(enabled=False, consecutive_failures=5, disabled_reason="x")

    response = auth_client.patch(
        f"/api/webhooks/{webhook_id}/",
        {"url": "https://hooks.example/other", "events": ["workflow.failed"], "enabled": True},
        format="json",
    )

    assert response.status_code == 200, response.content
    endpoint = WebhookEndpoint.objects.get(pk=webhook_id)
    assert (endpoint.url, endpoint.events, endpoint.enabled) == (
        "https://hooks.example/other",
        ["workflow.failed"],
        True,
    )
    assert (endpoint.consecutive_failures, endpoint.disabled_reason) == (0, "")
    assert "secret" not in response.json()["data"]


def test_delete_removes_the_endpoint_and_its_deliveries(auth_client):
    webhook_id = create(auth_client).json()["data"]["webhook_id"]
    WebhookDelivery.objects.create(endpoint_id=webhook_id, message_id="msg_1", event="panel.ready", body={})

    response = auth_client.delete(f"/api/webhooks/{webhook_id}/")

    assert response.json()["data"] == {"webhook_id": webhook_id, "deleted": True}
    assert (WebhookEndpoint.objects.count(), WebhookDelivery.objects.count()) == (0, 0)
    error_of(auth_client.get(f"/api/webhooks/{webhook_id}/"), 404)


def test_deliveries_list_each_attempt_newest_message_first(auth_client):
    webhook_id = create(auth_client).json()["data"]["webhook_id"]
    first = WebhookDelivery.objects.create(
        endpoint_id=webhook_id, message_id="msg_a", event="workflow.completed", body={"type": "workflow.completed"}
    )
    WebhookAttempt.objects.create(delivery=first, number=1, status_code=500, duration_ms=12, error="HTTP 500")
    WebhookAttempt.objects.create(
        delivery=first, number=2, status_code=200, duration_ms=8, response_excerpt="ok", succeeded=True
    )
    WebhookDelivery.objects.create(endpoint_id=webhook_id, message_id="msg_b", event="panel.ready", body={})

    page = auth_client.get(f"/api/webhooks/{webhook_id}/deliveries/").json()["data"]["results"]

    assert [item["webhook_message_id"] for item in page] == ["msg_b", "msg_a"]
    attempts = page[1]["attempts"]
    assert [(a["attempt"], a["status_code"], a["error"], a["succeeded"]) for a in attempts] == [
        (1, 500, "HTTP 500", False),
        (2, 200, "", True),
    ]
    assert (attempts[0]["duration_ms"], attempts[1]["response_excerpt"]) == (12, "ok")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example/x", "scheme"),
        ("http://10.0.0.7/hook", "private_address"),
        ("http://169.254.169.254/latest/meta-data/", "private_address"),
        ("http://intranet.example/hook", "private_address"),
        ("http://mixed.example/hook", "private_address"),
        ("http://127.0.0.1:8000/hook", "private_address"),
        ("http://[::1]:8000/hook", "private_address"),
        ("http://user:pw@hooks.example/hook", "credentials"),
    ],
)
def test_unsafe_urls_are_refused_with_a_code_and_nothing_is_created(auth_client, url, reason):
    before = database_fingerprint()

    error = error_of(create(auth_client, url=url), 400)

    assert (error["code"], error["details"]["reason"]) == ("WEBHOOK_URL_REFUSED", reason)
    assert database_fingerprint() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "not a url"}, "url"),
        ({"url": ""}, "url"),
        ({"events": ["workflow.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"events": "workflow.completed"}, "events"),
        ({"project_id": "../etc"}, "project_id"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(auth_client, body, field):
    before = database_fingerprint()

    error = error_of(create(auth_client, **body), 400)

    assert error["code"] == "VALIDATION_ERROR"
    assert field in str(error["details"])
    assert database_fingerprint() == before


def test_a_bad_patch_changes_nothing(auth_client):
    webhook_id = create(auth_client).json()["data"]["webhook_id"]
    before = database_fingerprint()

    for body, status in [
        ({"url": "http://10.0.0.7/"}, 400),
        ({"events": ["nope"]}, 400),
        ({"enabled": "maybe"}, 400),
        ({"owner": 5}, 400),
    ]:
        error_of(auth_client.patch(f"/api/webhooks/{webhook_id}/", body, format="json"), status)

    assert database_fingerprint() == before


def test_loopback_is_accepted_only_where_configuration_allows_it(auth_client, webhook_settings):
    error_of(create(auth_client, url="http://127.0.0.1:9/hook"), 400)

    webhook_settings(allow_loopback=True)

    assert create(auth_client, url="http://127.0.0.1:9/hook").status_code == 201
    assert create(auth_client, url="http://localhost:9/hook").status_code == 201
    # Loopback only: private and link-local addresses stay refused.
    assert error_of(create(auth_client, url="http://10.0.0.7/hook"), 400)["code"] == "WEBHOOK_URL_REFUSED"
    assert error_of(create(auth_client, url="http://169.254.169.254/"), 400)["code"] == "WEBHOOK_URL_REFUSED"


def test_a_project_of_someone_else_is_not_found(auth_client, other_user):
    ProjectFactory(id="theirs", owner=other_user)

    assert error_of(create(auth_client, project_id="theirs"), 404)["code"] == "MEMORY_NOT_FOUND"
    assert WebhookEndpoint.objects.count() == 0


def test_the_local_settings_allow_loopback_and_the_defaults_do_not(tmp_path, settings):
    import os
    import subprocess
    import sys

    from comicmem_site.memory_config import WebhooksConfig

    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.MEMORY.webhooks.allow_loopback)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.local", "COMICMEM_VAR_DIR": str(tmp_path)}
    env.pop("WEBHOOKS_ALLOW_LOOPBACK", None)

    local = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)

    assert local.stdout.strip() == "True"
    assert WebhooksConfig().allow_loopback is False
    assert settings.MEMORY.webhooks.allow_loopback is False  # memory_config.yaml, as production reads it

"""Webhooks on a real Celery worker (the embedded filesystem broker): a run's completion delivered to a loopback
receiver that verifies the signature with the Standard Webhooks library; a 500 retried with the same webhook-id;
a receiver that hangs (the attempt times out, the retry succeeds); an endpoint disabled after its failures."""

from __future__ import annotations

import pytest
from django.db import transaction

from memory_app.models import HistoryRecord, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from memory_app.services.webhooks import webhook_dispatch, webhook_endpoint_create
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOPBACK = {"WEBHOOKS_ALLOW_LOOPBACK": "1", "WEBHOOKS_RETRY_BASE_DELAY_SECONDS": "0.3"}


@pytest.fixture
def subscribe(webhook_settings, user):
    webhook_settings(allow_loopback=True)

    def make(receiver, events: list[str]) -> WebhookEndpoint:
        endpoint = webhook_endpoint_create(user=user, url=receiver.url, events=events)
        receiver.secret = endpoint.secret
        return endpoint

    return make


def finished(delivery_id: int) -> bool:
    return WebhookDelivery.objects.filter(pk=delivery_id).exclude(status="pending").exists()


def attempts_of(delivery_id: int) -> list[tuple[int, int | None, bool]]:
    rows = WebhookAttempt.objects.filter(delivery_id=delivery_id).order_by("number")
    return [(row.number, row.status_code, row.succeeded) for row in rows]


def send(project, event: str = "workflow.completed") -> WebhookDelivery:
    with transaction.atomic():  # the task is sent when this commits
        (delivery,) = webhook_dispatch(event=event, project=project, payload={"workflow_id": "from-the-test"})
    return delivery


def test_a_run_on_a_worker_delivers_workflow_completed_signed(
    start_worker, media, settings, webhook_receiver, subscribe, user, project, manga_shonen
):
    receiver = webhook_receiver()
    subscribe(receiver, ["workflow.completed", "workflow.failed"])
    start_worker(**FAST, **LOOPBACK, COMICMEM_TEST_MEDIA_ROOT=str(media), CACHE_DIR=str(settings.CACHE_DIR))

    run = engine.workflow_start(
        user=user, workflow_type="text_compression", project_id="proj-001", data={"text": STORY}
    )
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end")
    wait_for(lambda: len(receiver.received) >= 1, timeout=30, what="the webhook")

    assert status_of(run) == "completed"
    (message,) = receiver.received
    assert message.verified is True
    assert message.payload["type"] == "workflow.completed"
    assert message.payload["data"]["workflow_id"] == str(run.pk)
    assert message.payload["data"]["project_id"] == "proj-001"
    assert message.payload["data"]["status"] == "completed"
    delivery = WebhookDelivery.objects.get()
    wait_for(lambda: finished(delivery.pk), what="the delivery to be recorded")
    assert (WebhookDelivery.objects.get().status, message.message_id) == ("succeeded", delivery.message_id)
    assert attempts_of(delivery.pk) == [(1, 200, True)]


def test_a_500_is_retried_by_the_worker_with_the_same_webhook_id(start_worker, webhook_receiver, subscribe, project):
    receiver = webhook_receiver([500, 500])
    subscribe(receiver, ["*"])
    start_worker(**LOOPBACK)

    delivery = send(project)
    wait_for(lambda: finished(delivery.pk), what="the delivery to end")

    assert WebhookDelivery.objects.get().status == "succeeded"
    assert [m.message_id for m in receiver.received] == [delivery.message_id] * 3
    assert all(m.verified for m in receiver.received)
    assert attempts_of(delivery.pk) == [(1, 500, False), (2, 500, False), (3, 200, True)]


def test_a_receiver_that_hangs_times_out_then_the_retry_is_delivered(
    start_worker, webhook_receiver, subscribe, project
):
    receiver = webhook_receiver([("hang", 5)])
    subscribe(receiver, ["panel.ready"])
    start_worker(**LOOPBACK, WEBHOOKS_TIMEOUT_SECONDS="1")

    delivery = send(project, "panel.ready")
    wait_for(lambda: finished(delivery.pk), what="the delivery to end")

    first, second = WebhookAttempt.objects.filter(delivery_id=delivery.pk).order_by("number")
    assert (first.status_code, first.succeeded) == (None, False)
    assert "timed out" in first.error
    assert 900 <= first.duration_ms < 4000
    assert (second.status_code, second.succeeded) == (200, True)
    assert [m.message_id for m in receiver.received] == [delivery.message_id] * 2


def test_an_endpoint_that_keeps_failing_is_disabled_with_a_history_record(
    start_worker, webhook_receiver, subscribe, project
):
    receiver = webhook_receiver([500] * 10)
    endpoint = subscribe(receiver, ["*"])
    start_worker(**LOOPBACK, WEBHOOKS_MAX_ATTEMPTS="2", WEBHOOKS_DISABLE_AFTER_FAILURES="2")

    deliveries = [send(project), send(project)]
    wait_for(lambda: all(finished(d.pk) for d in deliveries), what="both deliveries to end")

    assert [d.status for d in WebhookDelivery.objects.order_by("id")] == ["failed", "failed"]
    assert len(receiver.received) == 4
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures) == (False, 2)
    assert HistoryRecord.objects.filter(action="webhook_disabled", details__webhook_id=endpoint.pk).count() == 1

"""Webhook messages: written with the event, sent one attempt per task to a real receiver on loopback that
verifies each with the Standard Webhooks library; retries, timeouts, idempotent redelivery, disabling."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from memory_app.models import HistoryRecord, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from memory_app.services.webhooks import (
    webhook_deliveries_due,
    webhook_deliveries_prune,
    webhook_delivery_attempt,
    webhook_dispatch,
    webhook_endpoint_create,
)
from memory_app.services.workflow import workflow_cancel, workflow_create
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def loopback(webhook_settings) -> None:
    webhook_settings(allow_loopback=True, retry_base_delay_seconds=0, timeout_seconds=2, max_attempts=3)


def endpoint_for(receiver, user, *, events=("*",), project=None) -> WebhookEndpoint:
    endpoint = webhook_endpoint_create(user=user, url=receiver.url, events=list(events), project=project)
    receiver.secret = endpoint.secret
    return endpoint


def dispatch(project, event="workflow.completed", payload=None) -> list[WebhookDelivery]:
    return webhook_dispatch(event=event, project=project, payload=payload or {"workflow_id": "w-1"})


def attempts_of(delivery) -> list[tuple[int, int | None, bool]]:
    return [(a.number, a.status_code, a.succeeded) for a in WebhookAttempt.objects.filter(delivery=delivery)]


def test_dispatch_writes_one_message_per_subscribed_endpoint_and_sends_after_commit(
    loopback, webhook_receiver, user, project, other_user, django_capture_on_commit_callbacks
):
    receiver = webhook_receiver()
    everything = endpoint_for(receiver, user)
    this_project = endpoint_for(receiver, user, events=["workflow.completed"], project=project)
    endpoint_for(receiver, user, events=["panel.ready"])  # another event
    endpoint_for(receiver, user, project=ProjectFactory(id="proj-002", owner=user))  # another project
    endpoint_for(receiver, other_user)  # another owner
    off = endpoint_for(receiver, user)
    WebhookEndpoint.objects.filter(pk=off.pk).update(enabled=False)

    with django_capture_on_commit_callbacks() as callbacks:
        deliveries = dispatch(project, payload={"workflow_id": "w-1", "status": "completed"})

    assert sorted(d.endpoint_id for d in deliveries) == sorted([everything.pk, this_project.pk])
    assert len(callbacks) == 2  # one send per message, after the commit
    assert receiver.received == []  # nothing is sent inside the transaction
    body = deliveries[0].body
    assert (body["type"], body["data"]) == (
        "workflow.completed",
        {"project_id": "proj-001", "workflow_id": "w-1", "status": "completed"},
    )
    assert body["timestamp"].endswith("Z")
    assert deliveries[0].message_id != deliveries[1].message_id


def test_an_attempt_sends_a_signed_message_the_reference_library_verifies(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    (delivery,) = dispatch(project)

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (outcome.sent, outcome.status, outcome.attempt, outcome.status_code) == (True, "succeeded", 1, 200)
    (message,) = receiver.received
    assert message.verified is True
    assert message.message_id == delivery.message_id
    assert message.headers["webhook-signature"].startswith("v1,")
    assert abs(int(message.headers["webhook-timestamp"]) - timezone.now().timestamp()) < 10
    assert message.payload == delivery.body
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert '"ok": true' in attempt.response_excerpt


def test_a_redelivered_task_does_not_send_a_success_again(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    (delivery,) = dispatch(project)
    webhook_delivery_attempt(delivery_id=delivery.pk)

    again = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (again.sent, again.status) == (False, "succeeded")
    assert len(receiver.received) == 1
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1


def test_a_500_is_retried_with_the_same_webhook_id_and_every_attempt_is_logged(
    loopback, webhook_receiver, user, project, django_capture_on_commit_callbacks
):
    receiver = webhook_receiver([500])
    endpoint_for(receiver, user)
    (delivery,) = dispatch(project)

    first = webhook_delivery_attempt(delivery_id=delivery.pk)
    second = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (first.status, first.status_code, first.retry_in_seconds) == ("pending", 500, 0)
    assert (second.status, second.status_code) == ("succeeded", 200)
    assert [m.message_id for m in receiver.received] == [delivery.message_id] * 2
    assert all(m.verified for m in receiver.received)
    assert attempts_of(delivery) == [(1, 500, False), (2, 200, True)]
    assert WebhookAttempt.objects.get(delivery=delivery, number=1).error == "HTTP 500"


def test_the_backoff_doubles_and_the_next_attempt_waits_for_it(webhook_settings, webhook_receiver, user, project):
    webhook_settings(allow_loopback=True, retry_base_delay_seconds=10, max_attempts=4)
    receiver = webhook_receiver([503, 503])
    endpoint_for(receiver, user)
    (delivery,) = dispatch(project)

    first = webhook_delivery_attempt(delivery_id=delivery.pk)
    early = webhook_delivery_attempt(delivery_id=delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    second = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (first.retry_in_seconds, second.retry_in_seconds) == (10, 20)
    assert (early.sent, early.status) == (False, "pending")
    assert 0 < (early.retry_in_seconds or 0) <= 10
    assert len(receiver.received) == 2


def test_a_receiver_that_hangs_is_a_timed_out_attempt_then_the_retry_succeeds(
    webhook_settings, webhook_receiver, user, project
):
    webhook_settings(allow_loopback=True, retry_base_delay_seconds=0, timeout_seconds=0.5, max_attempts=3)
    receiver = webhook_receiver([("hang", 3)])
    endpoint_for(receiver, user)
    (delivery,) = dispatch(project)

    first = webhook_delivery_attempt(delivery_id=delivery.pk)
    second = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (first.status, first.status_code) == ("pending", None)
    assert second.status == "succeeded"
    hung = WebhookAttempt.objects.get(delivery=delivery, number=1)
    assert "timed out" in hung.error
    assert 400 <= hung.duration_ms < 2500
    assert [m.message_id for m in receiver.received] == [delivery.message_id] * 2


def test_after_the_last_attempt_the_message_fails(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver([500, 502, 500])
    endpoint = endpoint_for(receiver, user)
    (delivery,) = dispatch(project)

    outcomes = [webhook_delivery_attempt(delivery_id=delivery.pk) for _ in range(4)]

    assert [o.status for o in outcomes] == ["pending", "pending", "failed", "failed"]
    assert outcomes[3].sent is False
    assert len(receiver.received) == 3
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.enabled) == (1, True)


def test_an_endpoint_is_disabled_after_n_failed_messages_in_a_row_with_a_history_record(
    webhook_settings, webhook_receiver, user, project
):
    webhook_settings(allow_loopback=True, retry_base_delay_seconds=0, max_attempts=1, disable_after_failures=2)
    receiver = webhook_receiver([500, 200, 500, 500])
    endpoint = endpoint_for(receiver, user, project=project)

    for _ in range(4):
        (delivery,) = dispatch(project)
        webhook_delivery_attempt(delivery_id=delivery.pk)
        endpoint.refresh_from_db()
        if _ == 1:
            assert endpoint.consecutive_failures == 0  # a success in between starts the count again

    assert (endpoint.enabled, endpoint.consecutive_failures) == (False, 2)
    assert endpoint.disabled_reason
    record = HistoryRecord.objects.get(action="webhook_disabled")
    assert (record.project_id, record.user_id, record.details["webhook_id"]) == (project.pk, user.pk, endpoint.pk)
    assert dispatch(project) == []  # a disabled endpoint gets no more messages


def test_a_message_to_an_endpoint_disabled_meanwhile_is_not_sent(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint = endpoint_for(receiver, user)
    (delivery,) = dispatch(project)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert (outcome.sent, outcome.status) == (False, "failed")
    assert receiver.received == []


def test_the_sweep_finds_pending_messages_whose_time_has_come(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    due, later = dispatch(project), dispatch(project)
    WebhookDelivery.objects.filter(pk=later[0].pk).update(next_attempt_at=timezone.now() + dt.timedelta(hours=1))
    webhook_delivery_attempt(delivery_id=dispatch(project)[0].pk)  # succeeded: not due

    assert webhook_deliveries_due() == [due[0].pk]


def test_finished_messages_past_the_retention_are_deleted_with_their_attempts_and_pending_ones_kept(
    loopback, webhook_receiver, user, project, monkeypatch
):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    old_success, recent_success, old_pending = dispatch(project), dispatch(project), dispatch(project)
    for delivery in (old_success, recent_success):
        assert webhook_delivery_attempt(delivery_id=delivery[0].pk).status == "succeeded"
    days_ago = timezone.now() - dt.timedelta(days=31)
    WebhookDelivery.objects.filter(pk=old_success[0].pk).update(finished_at=days_ago)
    WebhookDelivery.objects.filter(pk=old_pending[0].pk).update(created_at=days_ago)
    monkeypatch.setattr("memory_app.services.webhooks.PRUNE_BATCH", 1)

    report = webhook_deliveries_prune(max_batches=5)

    assert report == {"deleted": 1, "more": False}
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {recent_success[0].pk, old_pending[0].pk}
    assert not WebhookAttempt.objects.filter(delivery_id=old_success[0].pk).exists()
    assert WebhookAttempt.objects.filter(delivery_id=recent_success[0].pk).count() == 1


def test_the_beat_sweep_also_prunes(loopback, webhook_receiver, user, project):
    from memory_app.tasks import webhook_deliveries_sweep_task

    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    (finished,) = dispatch(project)
    WebhookDelivery.objects.filter(pk=finished.pk).update(
        status="succeeded", finished_at=timezone.now() - dt.timedelta(days=31)
    )

    assert webhook_deliveries_sweep_task() == {"sent": 0, "deleted": 1}
    assert not WebhookDelivery.objects.exists()


def test_the_prune_stops_after_its_batches_and_says_more_is_left(
    loopback, webhook_receiver, user, project, monkeypatch
):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    deliveries = [dispatch(project)[0] for _ in range(3)]
    WebhookDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        status="failed", finished_at=timezone.now() - dt.timedelta(days=40)
    )
    monkeypatch.setattr("memory_app.services.webhooks.PRUNE_BATCH", 1)

    assert webhook_deliveries_prune(max_batches=2) == {"deleted": 2, "more": True}
    assert webhook_deliveries_prune(max_batches=2) == {"deleted": 1, "more": False}
    assert not WebhookDelivery.objects.exists()


def test_a_cancelled_run_writes_a_workflow_cancelled_message(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user, events=["workflow.cancelled"])
    run = workflow_create(
        workflow_type="text_compression", project=project, owner=user, steps=["text_analysis"], data={}, preferences={}
    )

    workflow_cancel(workflow=run, user=user)

    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.event == "workflow.cancelled"
    assert delivery.body["data"]["workflow_id"] == str(run.pk)
    assert delivery.body["data"]["status"] == "cancelled"


def test_another_owner_s_project_events_never_reach_my_endpoint(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    stranger = ProjectFactory(id="theirs", owner=UserFactory(username="stranger"))

    assert dispatch(stranger) == []


def test_a_receiver_holding_another_secret_rejects_the_signature(loopback, webhook_receiver, user, project):
    receiver = webhook_receiver()
    endpoint_for(receiver, user)
    receiver.secret = "whsec_" + "QUJD" * 8  # not the endpoint's
    (delivery,) = dispatch(project)

    webhook_delivery_attempt(delivery_id=delivery.pk)

    assert [m.verified for m in receiver.received] == [False]

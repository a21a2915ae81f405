"""Webhooks (Standard Webhooks): endpoints a user registers, messages written in the transaction of the event,
and their delivery, one attempt per task.

A message is a ``WebhookDelivery`` row written with the event, so it commits or rolls back with it; the task is
sent after the commit. Every attempt signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 under the
endpoint's secret (``webhook-signature: v1,<base64>``); ``webhook-id`` is the message's id, the same on every
attempt, so a receiver can drop a message it has seen. The delivery row's status decides whether a task sends:
a redelivered task finds it ``succeeded`` (or ``failed``) and does nothing; one that arrives while another attempt
holds its lease does nothing either, and the beat sweep sends the delivery again if that lease ends unrecorded
(its worker died). A worker killed between the receiver's 2xx and our record
of it sends the message once more, with the same ``webhook-id`` (at least once, as the specification says).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError
from standardwebhooks import Webhook

from memory_app.errors import PreviousContextRefused, RetryableProviderError, ValidationFailed, WebhookUrlRefused
from memory_app.models import (
    WEBHOOK_ALL_EVENTS,
    WEBHOOK_EVENTS,
    HistoryAction,
    Project,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from memory_app.safe_fetch import guarded_post, url_check
from memory_app.services.history import history_record

logger = logging.getLogger("memory_app.webhooks")

WEBHOOK_TASK = "memory_app.webhook_deliver"
# How long an attempt holds its delivery beyond the attempt's timeout: a task redelivered meanwhile waits.
LEASE_MARGIN_SECONDS = 30.0


# --- endpoints ---------------------------------------------------------------------------------------------


def webhook_secret_new() -> str:
    """``whsec_`` + base64 of 32 random bytes: the form the specification's libraries take."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _checked_url(url: str) -> str:
    try:
        url_check(url, allow_loopback=settings.MEMORY.webhooks.allow_loopback)
    except PreviousContextRefused as refusal:
        raise WebhookUrlRefused(
            refusal.message, details={"url": url[:300], "reason": refusal.details.get("reason", "")}
        ) from None
    return url


def _checked_events(events: list[str]) -> list[str]:
    unknown = [event for event in events if event not in (*WEBHOOK_EVENTS, WEBHOOK_ALL_EVENTS)]
    if unknown or not events:
        raise ValidationFailed(
            "Unknown webhook event." if unknown else "Name at least one event.",
            details={"fields": {"events": [f"One or more of {', '.join((*WEBHOOK_EVENTS, WEBHOOK_ALL_EVENTS))}."]}},
        )
    return list(dict.fromkeys(events))


def webhook_endpoint_create(
    *, user: AbstractBaseUser, url: str, events: list[str], project: Project | None = None
) -> WebhookEndpoint:
    """A new enabled endpoint; its ``secret`` is shown to the caller once (the API answers it at creation only)."""
    return WebhookEndpoint.objects.create(
        owner_id=user.pk,
        project=project,
        url=_checked_url(url),
        events=_checked_events(events),
        secret=webhook_secret_new(),
    )


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, url: str | None = None, events: list[str] | None = None, enabled: bool | None = None
) -> WebhookEndpoint:
    """Change what is given. Enabling a disabled endpoint starts its failure count again."""
    if url is not None:
        endpoint.url = _checked_url(url)
    if events is not None:
        endpoint.events = _checked_events(events)
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.consecutive_failures = 0
            endpoint.disabled_reason = ""
        endpoint.enabled = enabled
    endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


# --- messages ----------------------------------------------------------------------------------------------


def _send_on_commit(delivery_id: int, countdown: float = 0) -> None:
    def send() -> None:
        # By the registered task when this process has it (an eager configuration runs it inline), by name
        # otherwise (memory_app.tasks imports this module).
        task = current_app.tasks.get(WEBHOOK_TASK)
        try:
            if task is not None:
                task.apply_async(args=(delivery_id,), countdown=countdown)
            else:
                current_app.send_task(WEBHOOK_TASK, args=(delivery_id,), countdown=countdown)
        except (OperationalError, OSError):
            # The row stays pending: the sweep sends it again once the broker answers.
            logger.warning("webhook delivery %s not sent; the sweep will send it", delivery_id, exc_info=True)

    transaction.on_commit(send)


def _subscribed(endpoint: WebhookEndpoint, event: str) -> bool:
    return event in endpoint.events or WEBHOOK_ALL_EVENTS in endpoint.events


def webhook_dispatch(*, event: str, project: Project, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Write one message for ``event`` to every enabled endpoint of the project's owner that subscribed to it
    (for this project or all of them), in the caller's transaction; each is sent after the commit."""
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    endpoints = WebhookEndpoint.objects.filter(owner_id=project.owner_id, enabled=True).filter(
        Q(project__isnull=True) | Q(project=project)
    )
    now = timezone.now()
    data = {"project_id": project.public_id, **payload}
    body = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    deliveries = []
    for endpoint in endpoints:
        if not _subscribed(endpoint, event):
            continue
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, message_id=f"msg_{uuid.uuid4().hex}", event=event, body=body, next_attempt_at=now
        )
        _send_on_commit(delivery.pk)
        deliveries.append(delivery)
    return deliveries


# --- delivery ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    """What one task did: ``sent`` false when the delivery was not due (finished already, or leased)."""

    delivery_id: int
    sent: bool
    status: str
    attempt: int = 0
    status_code: int | None = None
    retry_in_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivery": self.delivery_id,
            "sent": self.sent,
            "status": self.status,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "retry_in_seconds": self.retry_in_seconds,
        }


def webhook_signature_headers(*, secret: str, message_id: str, timestamp: dt.datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, timestamp, body),
    }


def _claim(delivery_id: int) -> tuple[WebhookDelivery, int] | AttemptOutcome:
    """Lock the delivery; if it is pending, due and its endpoint enabled, take the next attempt number and lease
    it for the attempt. Otherwise, the outcome that says why nothing is sent."""
    config = settings.MEMORY.webhooks
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return AttemptOutcome(delivery_id=delivery_id, sent=False, status="gone")
        if delivery.status != WebhookDeliveryStatus.PENDING:
            # Finished already: a redelivered task (or the sweep) must not send it again.
            return AttemptOutcome(delivery_id=delivery_id, sent=False, status=delivery.status)
        now = timezone.now()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            wait = (delivery.next_attempt_at - now).total_seconds()
            return AttemptOutcome(delivery_id=delivery_id, sent=False, status="pending", retry_in_seconds=wait)
        if not delivery.endpoint.enabled:
            delivery.status = WebhookDeliveryStatus.FAILED
            delivery.finished_at = now
            delivery.save(update_fields=["status", "finished_at"])
            return AttemptOutcome(delivery_id=delivery_id, sent=False, status=delivery.status)
        delivery.attempts = F("attempts") + 1
        delivery.next_attempt_at = now + dt.timedelta(seconds=config.timeout_seconds + LEASE_MARGIN_SECONDS)
        delivery.save(update_fields=["attempts", "next_attempt_at"])
        delivery.refresh_from_db(fields=["attempts"])
        return delivery, delivery.attempts


def webhook_delivery_attempt(*, delivery_id: int) -> AttemptOutcome:
    """One attempt of one delivery, recorded; the next attempt is sent after the commit when one is left."""
    claimed = _claim(delivery_id)
    if isinstance(claimed, AttemptOutcome):
        # Not due: another attempt holds the lease (it sends the next one itself), or this task came early. It is
        # not sent again from here, so tasks never multiply; a lease that ends with its worker is the sweep's.
        return claimed
    delivery, number = claimed
    endpoint = delivery.endpoint
    config = settings.MEMORY.webhooks
    body = json.dumps(delivery.body, ensure_ascii=False, separators=(",", ":"))
    headers = {
        "content-type": "application/json",
        "user-agent": "comicmem-webhooks/1",
        **webhook_signature_headers(
            secret=endpoint.secret, message_id=delivery.message_id, timestamp=timezone.now(), body=body
        ),
    }
    started = time.monotonic()
    status_code: int | None = None
    excerpt = error = ""
    try:
        answer = guarded_post(
            endpoint.url,
            content=body.encode("utf-8"),
            headers=headers,
            timeout_seconds=config.timeout_seconds,
            allow_loopback=config.allow_loopback,
        )
        status_code, excerpt = answer.status_code, answer.excerpt
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except (PreviousContextRefused, RetryableProviderError) as exc:
        error = str(exc)
    duration_ms = int((time.monotonic() - started) * 1000)
    return _record(
        delivery=delivery,
        number=number,
        status_code=status_code,
        duration_ms=duration_ms,
        error=error,
        excerpt=excerpt,
    )


def _record(
    *, delivery: WebhookDelivery, number: int, status_code: int | None, duration_ms: int, error: str, excerpt: str
) -> AttemptOutcome:
    config = settings.MEMORY.webhooks
    succeeded = not error
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            status_code=status_code,
            duration_ms=duration_ms,
            error=error[:500],
            response_excerpt=excerpt[:500],
            succeeded=succeeded,
        )
        now = timezone.now()
        endpoint_rows = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
        if succeeded:
            # Compare-and-set: only the pending row becomes succeeded (a row finished meanwhile stays as it is).
            WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING).update(
                status=WebhookDeliveryStatus.SUCCEEDED, finished_at=now, next_attempt_at=None
            )
            endpoint_rows.update(consecutive_failures=0)
            return AttemptOutcome(
                delivery_id=delivery.pk, sent=True, status="succeeded", attempt=number, status_code=status_code
            )
        if number < config.max_attempts:
            delay = config.retry_base_delay_seconds * 2 ** (number - 1)
            WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING).update(
                next_attempt_at=now + dt.timedelta(seconds=delay)
            )
            _send_on_commit(delivery.pk, countdown=delay)
            return AttemptOutcome(
                delivery_id=delivery.pk,
                sent=True,
                status="pending",
                attempt=number,
                status_code=status_code,
                retry_in_seconds=delay,
            )
        changed = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING).update(
            status=WebhookDeliveryStatus.FAILED, finished_at=now, next_attempt_at=None
        )
        if changed:
            _count_failure(endpoint_id=delivery.endpoint_id)
        return AttemptOutcome(
            delivery_id=delivery.pk, sent=True, status="failed", attempt=number, status_code=status_code
        )


def _count_failure(*, endpoint_id: int) -> None:
    """One more message failed for good; at ``disable_after_failures`` in a row the endpoint is disabled."""
    limit = settings.MEMORY.webhooks.disable_after_failures
    endpoint = (
        WebhookEndpoint.objects.select_for_update(of=("self",)).select_related("project", "owner").get(pk=endpoint_id)
    )
    endpoint.consecutive_failures += 1
    fields = ["consecutive_failures", "updated_at"]
    if endpoint.enabled and endpoint.consecutive_failures >= limit:
        endpoint.enabled = False
        endpoint.disabled_reason = f"{endpoint.consecutive_failures} messages in a row failed."
        fields += ["enabled", "disabled_reason"]
        history_record(
            project=endpoint.project,
            action=HistoryAction.WEBHOOK_DISABLED,
            user=endpoint.owner,
            details={
                "webhook_id": endpoint.pk,
                "url": endpoint.url,
                "consecutive_failures": endpoint.consecutive_failures,
            },
        )
    endpoint.save(update_fields=fields)


def webhook_deliveries_due(*, limit: int = 500) -> list[int]:
    """Pending deliveries whose next attempt (or lease) is past: a send lost to a broker outage or a dead worker."""
    return list(
        WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


# Rows deleted per statement by the retention sweep (each delivery takes its attempts' log along).
PRUNE_BATCH = 1000


def webhook_deliveries_prune(*, max_batches: int = 10) -> dict[str, Any]:
    """Delete finished deliveries (succeeded or failed for good) whose end is older than
    ``webhooks.retention_days``, with their attempts, in batches; pending ones are never touched. ``more``: rows
    are left to delete."""
    cutoff = timezone.now() - dt.timedelta(days=settings.MEMORY.webhooks.retention_days)
    finished = WebhookDelivery.objects.exclude(status=WebhookDeliveryStatus.PENDING).filter(finished_at__lt=cutoff)
    deleted = 0
    for _ in range(max_batches):
        ids = list(finished.order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return {"deleted": deleted, "more": False}
        WebhookDelivery.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
    return {"deleted": deleted, "more": finished.exists()}

"""Celery tasks of the memory layers: thin wrappers around services."""

from __future__ import annotations

import socket

from celery import shared_task
from django.db import connection
from django.utils import timezone


@shared_task(name="memory_app.ping")
def ping(token: str) -> dict[str, str]:
    """A round trip through broker, worker and database: returns the token with the worker's view of things."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {
        "token": token,
        "hostname": socket.gethostname(),
        "database": connection.vendor,
        "at": timezone.now().isoformat(),
    }

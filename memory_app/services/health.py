"""Reachability of what the API and the workers depend on: database, broker, cache."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str


def _database() -> ComponentHealth:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the detail says which
        return ComponentHealth("database", False, f"{type(exc).__name__}: {exc}".strip()[:300])
    return ComponentHealth("database", True, connection.vendor)


def _broker() -> ComponentHealth:
    from comicmem_site.celery import app

    url = app.conf.broker_url or ""
    if url.startswith("filesystem://"):
        folder = app.conf.broker_transport_options.get("data_folder_in", "")
        if os.path.isdir(folder) and os.access(folder, os.W_OK):
            return ComponentHealth("broker", True, "filesystem")
        return ComponentHealth("broker", False, f"broker folder {folder!r} is missing or not writable")
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            transport = conn.transport_cls
    except Exception as exc:  # noqa: BLE001
        return ComponentHealth("broker", False, f"{type(exc).__name__}: {exc}".strip()[:300])
    return ComponentHealth("broker", True, str(transport))


def _cache() -> ComponentHealth:
    key = f"health:{uuid.uuid4().hex}"
    try:
        cache.set(key, "ok", timeout=10)
        value = cache.get(key)
        cache.delete(key)
    except Exception as exc:  # noqa: BLE001
        return ComponentHealth("cache", False, f"{type(exc).__name__}: {exc}".strip()[:300])
    if value != "ok":
        return ComponentHealth("cache", False, "a value written could not be read back")
    return ComponentHealth("cache", True, settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1])


def health_check() -> list[ComponentHealth]:
    return [_database(), _broker(), _cache()]

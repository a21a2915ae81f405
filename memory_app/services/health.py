"""Reachability of what the API and the workers depend on: database, broker, cache; and the panels' lettering font.

The font is not required (``required=False``): a missing font, or one without CJK glyphs, degrades health (the
panels would show boxes, and quality control fails them) but does not take the service down.

A health check answers within about ``CHECK_SECONDS`` even when a server accepts connections and then says
nothing (a paused Redis): the broker and cache checks run side by side on helper threads with short socket
timeouts, and one that has not answered by the deadline is reported down, named.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from memory_app.providers.fonts import font_report

# How long the broker and cache checks may take together, and each socket operation inside them.
CHECK_SECONDS = 1.5
# At most one check of each kind is in flight: health requests that come while one runs share its answer, so a
# stalled Redis and a prober calling every second never pile up checks (threads, connections) behind it.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-check")
_in_flight: dict[str, Future[ComponentHealth]] = {}
_in_flight_lock = threading.Lock()


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str
    required: bool = True  # False: the service runs without it, degraded


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
    # Without socket timeouts a Redis that accepts the connection and never answers holds the check forever.
    options = {
        **app.conf.broker_transport_options,
        "socket_timeout": CHECK_SECONDS,
        "socket_connect_timeout": CHECK_SECONDS,
    }
    try:
        with app.connection_for_write(connect_timeout=CHECK_SECONDS, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1,
                interval_start=0,
                interval_step=0,
                timeout=CHECK_SECONDS,  # type: ignore[arg-type]  # kombu takes float seconds; its stubs say int
            )
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


def _font() -> ComponentHealth:
    report = font_report()
    return ComponentHealth("font", report.ok, report.message, required=False)


def _shared_check(name: str, check: Callable[[], ComponentHealth]) -> Future[ComponentHealth]:
    """The check of that kind in flight, or a new one."""
    with _in_flight_lock:
        future = _in_flight.get(name)
        if future is None or future.done():
            future = _checks.submit(check)
            _in_flight[name] = future
        return future


def health_check() -> list[ComponentHealth]:
    started = time.monotonic()
    pending = {"broker": _shared_check("broker", _broker), "cache": _shared_check("cache", _cache)}
    results = [_database()]
    for name, future in pending.items():
        try:
            results.append(future.result(timeout=max(0.0, started + CHECK_SECONDS - time.monotonic())))
        except FutureTimeout:
            results.append(ComponentHealth(name, False, f"no answer within {CHECK_SECONDS} s"))
    # Last, outside the broker and cache checks' deadline (the first one in a process hashes the 16 MB font).
    results.append(_font())
    return results

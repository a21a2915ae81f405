"""manage.py ping_worker: send a task through the broker and wait for a worker to answer it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.tasks import ping


class Command(BaseCommand):
    help = "Round trip a task through the broker and a worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=30.0)

    def handle(self, *args: Any, **options: Any) -> None:
        token = uuid.uuid4().hex
        started = time.perf_counter()
        result = ping.delay(token)
        try:
            answer = result.get(timeout=options["timeout"], interval=0.1)
        except CeleryTimeoutError:
            raise CommandError(f"no worker answered within {options['timeout']} s (task {result.id})") from None
        if answer.get("token") != token:
            raise CommandError(f"the worker answered with the wrong token: {answer!r}")
        elapsed = (time.perf_counter() - started) * 1000
        self.stdout.write(f"worker {answer['hostname']} answered in {elapsed:.0f} ms (database: {answer['database']})")

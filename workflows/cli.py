"""What ``generate_comic`` and ``compress_text`` share: start a run through the engine (the service the API
uses), draw a plain-text progress bar until it ends, and say where its outputs are.

Without a worker nothing moves: ``--inline`` runs the steps in this process instead (tasks executed eagerly on
a background thread while this thread draws the bar).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, OutputWrapper
from django.db import connection

from memory_app.errors import ComicmemError
from memory_app.models import Project, WorkflowState, WorkflowStatus
from memory_app.selectors.projects import project_find
from memory_app.services.projects import project_create
from workflows import engine

BAR_WIDTH = 10
ENDED = {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text_file", type=Path, help="A UTF-8 text file (the story).")
    parser.add_argument("--project", default="cli", help="Project id (default 'cli', created for --user if missing).")
    parser.add_argument("--user", default="demo", help="Owner of a project this command creates (default demo).")
    parser.add_argument("--inline", action="store_true", help="Run the steps in this process (no worker needed).")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Give up waiting after this many seconds.")
    parser.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)


def progress_bar(progress: dict[str, Any], step: str) -> str:
    """``[#####     ] 50% step 3/6 segment 4/10`` (the segment part only during a fan-out)."""
    percent = float(progress.get("percent", 0.0))
    filled = min(BAR_WIDTH, int(percent / 100 * BAR_WIDTH))
    total = int(progress.get("total", 0))
    current = min(int(progress.get("current", 0)) + 1, total)
    line = f"[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {percent:3.0f}% step {current}/{total}"
    if step:
        line += f" {step}"
    if progress.get("total_segments"):
        line += f" segment {progress.get('completed_segments', 0)}/{progress['total_segments']}"
    return line


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None


def project_for(options: dict[str, Any]) -> Project:
    # The --user's project of that id first; else the only project of that id, whoever owns it (an operator's
    # command); else a new one for --user.
    try:
        project = project_find(project_id=options["project"], owner_username=options["user"]) or project_find(
            project_id=options["project"]
        )
    except ComicmemError as exc:
        raise CommandError(f"{exc.message} (pass --user)") from None
    if project is not None:
        return project
    owner = get_user_model().objects.filter(username=options["user"]).first()
    if owner is None:
        raise CommandError(
            f"no project '{options['project']}' and no user '{options['user']}' to create it for: "
            "run `manage.py ensure_demo_user`, or pass --project / --user"
        )
    try:
        return project_create(owner=owner, name=f"CLI ({options['project']})", project_id=options["project"])
    except ComicmemError as exc:
        raise CommandError(exc.message) from None


def run_with_progress(
    *,
    out: OutputWrapper | TextIO,
    workflow_type: str,
    project: Project,
    data: dict[str, Any],
    preferences: dict[str, Any],
    inline: bool,
    timeout: float,
    poll: float,
) -> WorkflowState:
    started_at = time.time()
    failure: list[BaseException] = []
    if inline:
        out.write("Running the steps in this process (--inline): no worker is used.\n")
        thread = threading.Thread(
            target=_start_inline, args=(workflow_type, project, data, preferences, failure), daemon=True
        )
        thread.start()
        run = _wait_for_created(project, workflow_type, started_at, thread, failure, timeout)
    else:
        run = _start(workflow_type, project, data, preferences)
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            out.write("Queued on the embedded broker: a worker must be running (`make run`), or use --inline.\n")
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        run.refresh_from_db()
        line = progress_bar(run.progress, run.current_step)
        if line != last:
            out.write("\r" + line.ljust(len(last)))
            out.flush()
            last = line
        if run.status in ENDED:
            out.write("\n")
            return run
        if time.monotonic() > deadline:
            out.write("\n")
            raise CommandError(f"run {run.pk} did not end within {timeout:.0f} s (status {run.status})")
        time.sleep(poll)


def _start(workflow_type: str, project: Project, data: dict[str, Any], preferences: dict[str, Any]) -> WorkflowState:
    try:
        return engine.workflow_start(
            user=project.owner,
            workflow_type=workflow_type,
            project_id=project.public_id,
            data=data,
            preferences=preferences,
        )
    except ComicmemError as exc:
        raise CommandError(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from None


def _start_inline(
    workflow_type: str,
    project: Project,
    data: dict[str, Any],
    preferences: dict[str, Any],
    failure: list[BaseException],
) -> None:
    from comicmem_site.celery import app

    app.conf.task_always_eager = True
    try:
        _start(workflow_type, project, data, preferences)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
        failure.append(exc)
    finally:
        connection.close()


def _wait_for_created(
    project: Project,
    workflow_type: str,
    started_at: float,
    thread: threading.Thread,
    failure: list[BaseException],
    timeout: float,
) -> WorkflowState:
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(started_at - 1, tz=UTC)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (
            WorkflowState.objects.filter(project=project, workflow_type=workflow_type, created_at__gte=since)
            .order_by("-created_at")
            .first()
        )
        if run is not None:
            return run
        if failure:
            error = failure[0]
            raise error if isinstance(error, CommandError) else CommandError(str(error))
        if not thread.is_alive():
            raise CommandError("the run could not be started")
        time.sleep(0.1)
    raise CommandError("the run was not created in time")


def report(out: OutputWrapper | TextIO, run: WorkflowState) -> None:
    if run.status != WorkflowStatus.COMPLETED:
        error = run.error or {}
        raise CommandError(f"run {run.pk} {run.status}: {error.get('type', '')} {error.get('message', '')}".strip())
    out.write(f"Run {run.pk} completed.\n")

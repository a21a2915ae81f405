"""Secrets never leave the request: plant unique markers under sensitive keys at any depth, through the API and
real (inline) task runs, then search every output — every row of every model, every log record, the export
files and the API's answers. A marker found anywhere is a leak.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.apps import apps
from django.core import serializers
from django.core.management import CommandError, call_command

from memory_app.redaction import REDACTED
from memory_app.services.history import history_export
from tests.workflows.conftest import eager  # noqa: F401 - the fixture, used by name below
from tests.workflows.real_pipelines.conftest import STORY

pytestmark = pytest.mark.django_db

MARK = f"mk{uuid.uuid4().hex[:12]}"


def secrets(label: str) -> dict:
    """Sensitive keys in every spelling and position the redaction promises to cover."""
    return {
        "api_key": f"{MARK}-{label}-api-key",
        "apiKey": f"{MARK}-{label}-camel",
        "nested": {
            "user_token": f"{MARK}-{label}-user-token",
            "deeper": [{"password": f"{MARK}-{label}-password"}, {"Authorization": f"Bearer {MARK}-{label}-bearer"}],
        },
        "items": [[{"access_token": f"{MARK}-{label}-access"}], {"X-Api-Key": f"{MARK}-{label}-header"}],
        "client_secret": f"{MARK}-{label}-client-secret",
        "bearer": f"{MARK}-{label}-bare-bearer",
        "session": {"session_id": f"{MARK}-{label}-session-id", "Set-Cookie": f"sid={MARK}-{label}-cookie"},
        "refs": [{"sessionId": f"{MARK}-{label}-session-camel"}, {"X-CSRF-Token": f"{MARK}-{label}-csrf"}],
    }


@pytest.fixture
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG (propagating or not) while the test runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    yield records
    for logger, level in levels:
        logger.removeHandler(handler)
        logger.setLevel(level)


def database_dump() -> dict[str, str]:
    """Every row of every installed model, serialized, by model label."""
    return {
        model._meta.label: serializers.serialize("json", model._default_manager.all()) for model in apps.get_models()
    }


def log_text(records: list[logging.LogRecord]) -> str:
    lines = []
    for record in records:
        lines.append(record.getMessage())
        lines.extend(f"{key}={value!r}" for key, value in vars(record).items() if key not in {"msg", "args"})
    return "\n".join(lines)


def assert_no_marker(where: str, text: str) -> None:
    position = text.find(MARK)
    assert position == -1, f"secret marker found in {where}: …{text[max(0, position - 200) : position + 80]}…"


@pytest.mark.usefixtures("eager")
def test_planted_secrets_reach_no_row_log_export_or_response(
    auth_client, staff_client, user, media, manga_shonen, every_log_record, django_capture_on_commit_callbacks, tmp_path
):
    responses: list[str] = []

    def keep(response, status: int) -> dict:
        assert response.status_code == status, response.content[:500]
        responses.append(response.content.decode())
        return response.json()

    keep(auth_client.post("/api/projects/", {"id": "proj-001", "name": "Secrets"}, format="json"), 201)
    # Conversation: context metadata on create and on import.
    context = keep(
        auth_client.post(
            "/api/context/create", {"project_id": "proj-001", "metadata": secrets("context")}, format="json"
        ),
        201,
    )["data"]
    context_id = context["context_id"]
    keep(auth_client.post(f"/api/context/{context_id}/messages", {"role": "user", "content": "hi"}, format="json"), 201)
    imported_id = str(uuid.uuid4())
    document = {
        "context_persistence": {
            "version": "1.0",
            "contexts": {
                imported_id: {
                    "conversation_id": imported_id,
                    "metadata": secrets("import"),
                    "messages": [{"role": "user", "content": "hello"}],
                }
            },
        }
    }
    keep(auth_client.post("/api/context/import", document, format="json"), 201)
    # Creative memory: a style's parameters.
    keep(
        auth_client.post(
            "/api/styles/",
            {"template_id": "secret_style", "name": "S", "visual_parameters": secrets("style")},
            format="json",
        ),
        201,
    )
    # Workflow inputs and preferences, through real task runs (inline).
    for workflow_type, extra in [("text_compression", {}), ("comic_generation", {"style": "manga_shonen"})]:
        body = {
            "workflow_type": workflow_type,
            "project_id": "proj-001",
            "input": {"text": STORY, **extra, **secrets(f"{workflow_type}-input")},
            "preferences": {"credentials": secrets(f"{workflow_type}-preferences")},
        }
        with django_capture_on_commit_callbacks(execute=True):
            started = keep(auth_client.post("/api/workflows/", body, format="json"), 202)["data"]
        run_id = started["workflow_id"]
        run = keep(auth_client.get(f"/api/workflows/{run_id}"), 200)["data"]
        assert run["status"] == "completed", run["error"]
        keep(auth_client.get(f"/api/workflows/{run_id}/history"), 200)

    # Every read the API offers over what was written.
    for path in [
        f"/api/context/{context_id}",
        f"/api/context/{imported_id}",
        f"/api/context/{context_id}/messages",
        "/api/context/",
        f"/api/context/export?context_id={context_id}",
        f"/api/context/export?context_id={imported_id}",
        "/api/memory/history/proj-001",
        "/api/memory/timeline/proj-001",
        "/api/styles/secret_style",
        "/api/characters/?project_id=proj-001",
        "/api/workflows/",
    ]:
        keep(auth_client.get(path), 200)
    for path in ["/api/memory/metrics", "/api/memory/analysis", "/api/workflows/"]:
        keep(staff_client.get(path), 200)

    # Exports written to disk: the history export and the contexts' command-line export.
    from memory_app.models import Project

    export_dir = tmp_path / "export"
    history_export(project=Project.objects.get(public_id="proj-001"), out_dir=export_dir)
    call_command(
        "export_contexts",
        user.username,
        output=str(tmp_path / "contexts.json"),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    exported_files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(exported_files) >= 3

    dump = database_dump()
    leaking = sorted(label for label, rows in dump.items() if MARK in rows)
    assert leaking == [], f"secret markers stored in: {leaking}"
    assert_no_marker("the logs", log_text(every_log_record))
    for path in exported_files:
        assert_no_marker(f"the export {path.name}", Path(path).read_text(encoding="utf-8", errors="replace"))
    for number, body in enumerate(responses):
        assert_no_marker(f"API response #{number}", body)
    # The planted values were really stored, only redacted (the search above could not pass vacuously).
    assert "".join(dump.values()).count(REDACTED) >= 10


def test_a_configured_provider_key_reaches_no_row_log_or_response(
    auth_client, staff_client, user, settings, openai_llm, every_log_record
):
    key = f"{MARK}-provider-key"
    llm = settings.MEMORY.providers.llm.model_copy(update={"api_key": key})
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"providers": settings.MEMORY.providers.model_copy(update={"llm": llm})}
    )
    responses: list[str] = []
    openai_llm.reply("Hello there")
    answered = auth_client.post("/api/context/generate-with-context", {"prompt": "hi"}, format="json")
    openai_llm.fail(401, {"error": {"message": "invalid api key"}})
    refused = auth_client.post("/api/context/generate-with-context", {"prompt": "again"}, format="json")
    responses += [answered.content.decode(), refused.content.decode()]
    for path in ["/api/memory/metrics", "/api/memory/analysis", "/api/health", "/api/context/"]:
        responses.append(staff_client.get(path).content.decode())
    diagnose_out, diagnose_err = io.StringIO(), io.StringIO()
    # A failing probe (no worker here) still prints its report before the command fails.
    with contextlib.suppress(SystemExit, CommandError):
        call_command("diagnose", stdout=diagnose_out, stderr=diagnose_err)

    assert answered.status_code == 200
    assert refused.status_code >= 400
    # The key was really used on the wire: only the provider may see it.
    assert [request.headers.get("authorization") for request in openai_llm.requests] == [f"Bearer {key}"] * 2
    dump = database_dump()
    assert sorted(label for label, rows in dump.items() if MARK in rows) == []
    assert_no_marker("the logs", log_text(every_log_record))
    assert_no_marker("diagnose", diagnose_out.getvalue() + diagnose_err.getvalue())
    for number, body in enumerate(responses):
        assert_no_marker(f"API response #{number}", body)


@pytest.mark.slow
@pytest.mark.integration
def test_secrets_in_a_run_on_a_real_worker_reach_neither_its_log_nor_the_database(
    transactional_db, auth_client, user, start_worker
):
    from memory_app.models import Project

    Project.objects.create(id="proj-001", public_id="proj-001", owner=user, name="Secrets")
    worker = start_worker(LOG_LEVEL="DEBUG", LOG_FORMAT="json")
    body = {
        "workflow_type": "text_compression",
        "project_id": "proj-001",
        "input": {"text": STORY, **secrets("worker-input")},
        "preferences": {"target_ratio": 0.6, "auth": secrets("worker-preferences")},
    }

    response = auth_client.post("/api/workflows/", body, format="json")
    assert response.status_code == 202, response.content[:300]
    run_id = response.json()["data"]["workflow_id"]
    deadline = time.monotonic() + 120
    status = "pending"
    while time.monotonic() < deadline and status not in {"completed", "failed"}:
        time.sleep(0.2)
        status = auth_client.get(f"/api/workflows/{run_id}").json()["data"]["status"]
    worker.stop()

    assert status == "completed", worker.output()[-3000:]
    log = worker.output()
    # One message ran the whole chain (the engine continues a run's plain steps in the worker that recorded the
    # previous one): its logged result says it continued through the four steps after the first.
    assert "workflows.run_unit" in log and "'continued': 4" in log, "the worker ran and logged every step"
    assert_no_marker("the worker's log", log)
    dump = database_dump()
    assert sorted(label for label, rows in dump.items() if MARK in rows) == []
    assert_no_marker("the run", auth_client.get(f"/api/workflows/{run_id}/history").content.decode())

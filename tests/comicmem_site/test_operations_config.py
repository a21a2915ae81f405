"""Operations configuration keys, and the production log format."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comicmem_site.memory_config import MemoryConfigError, load_memory_config
from memory_app.logging import RedactingJsonFormatter, RequestContextFilter, current_request, workflow_log_context

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_file_has_the_operations_defaults():
    config = load_memory_config(REPO_ROOT / "memory_config.yaml", environ={})

    assert config.monitoring.model_dump() == {
        "enabled": True,
        "memory_threshold": 0.8,
        "snapshot_interval_seconds": 300,
        "snapshot_retention_days": 30,
        "cache_memory_warning": 1024**3,
        "low_hit_rate": 0.5,
        "min_lookups_for_advice": 20,
        "metrics_password": None,
        "metrics_token": None,
    }
    assert config.maintenance.model_dump() == {
        "auto_cleanup_enabled": True,
        "optimize_interval_seconds": 300,
        "integrity_interval_seconds": 86400,
        "stuck_check_interval_seconds": 300,
        "integrity_repair": True,
        "storage_deletion_sweep_interval_seconds": 300,
        "storage_deletion_grace_seconds": 300,
    }
    assert (config.pipelines.output_retention_days, config.pipelines.output_expiry_interval_seconds) == (None, 3600)
    assert (config.workflow.stuck_after_seconds, config.workflow.resume_stuck) == (1800, False)


def test_the_environment_switches_cleanup_monitoring_and_the_scrape_password():
    environ = {
        "AUTO_CLEANUP_ENABLED": "false",
        "MEMORY_MONITORING_ENABLED": "0",
        "METRICS_PASSWORD": "pw",
        "METRICS_TOKEN": "tk",
    }

    config = load_memory_config(REPO_ROOT / "memory_config.yaml", environ=environ)

    assert (config.maintenance.auto_cleanup_enabled, config.monitoring.enabled) == (False, False)
    assert (config.monitoring.metrics_password, config.monitoring.metrics_token) == ("pw", "tk")


def test_a_bad_threshold_stops_start_up_naming_the_key(tmp_path):
    path = tmp_path / "memory_config.yaml"
    path.write_text("memory:\n  monitoring:\n    low_hit_rate: 1.5\n", encoding="utf-8")

    with pytest.raises(MemoryConfigError, match=r"memory\.monitoring\.low_hit_rate"):
        load_memory_config(path, environ={})


def _format(record: logging.LogRecord) -> dict:
    RequestContextFilter().filter(record)
    return json.loads(RedactingJsonFormatter().format(record))


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("memory_app.test", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_json_line_carries_the_workflow_and_step_and_is_redacted(db):
    with workflow_log_context(workflow_id="wf-1", step="render"):
        line = _format(_record("step failed", details={"api_key": "sk-live", "nested": {"password": "p", "n": 1}}))

    assert line["message"] == "step failed"
    assert (line["level"], line["logger"]) == ("WARNING", "memory_app.test")
    assert (line["workflow_id"], line["step"], line["request_id"], line["user"]) == ("wf-1", "render", "-", None)
    assert line["details"] == {"api_key": "[REDACTED]", "nested": {"password": "[REDACTED]", "n": 1}}
    assert "timestamp" in line


def test_a_json_line_names_the_authenticated_user_by_id_only(user, rf):
    request = rf.get("/")
    request.user = user
    token = current_request.set(request)
    try:
        line = _format(_record("hello"))
    finally:
        current_request.reset(token)

    assert (line["user"], line["workflow_id"], line["step"]) == (user.pk, None, None)
    assert user.username not in json.dumps(line)


def test_production_logs_json_and_local_keeps_the_plain_line(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.production",
        "SECRET_KEY": "x" * 60,
        "ALLOWED_HOSTS": "comics.example.com",
        "COMICMEM_VAR_DIR": str(tmp_path),
    }
    code = (
        "import django, logging; django.setup()\n"
        "from django.conf import settings\n"
        "logging.getLogger('memory_app.probe').warning('probe', extra={'token': 'abc'})\n"
        "print(getattr(settings, 'CELERY_WORKER_HIJACK_ROOT_LOGGER', True))\n"
    )

    production = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    local = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.local", "SECRET_KEY": ""},
        capture_output=True,
        text=True,
    )

    [line] = [json.loads(text) for text in production.stderr.splitlines() if '"probe"' in text]
    assert (line["message"], line["token"], line["logger"]) == ("probe", "[REDACTED]", "memory_app.probe")
    # Celery workers keep Django's handlers (JSON) in production; locally Celery's own format stays.
    assert (production.stdout.strip(), local.stdout.strip()) == ("False", "True")
    assert local.stderr.strip().endswith("WARNING [-] memory_app.probe: probe")


def test_the_default_cache_dir_follows_the_var_dir_like_everything_else_the_embedded_mode_writes(tmp_path):
    code = "import django; django.setup()\nfrom django.conf import settings\nprint(settings.CACHE_DIR)\n"
    env = {
        **{key: value for key, value in os.environ.items() if key != "CACHE_DIR"},
        "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.local",
        "COMICMEM_VAR_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((tmp_path / "state" / "cache").resolve())

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import service_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "comics.example.com",
    "DATABASE_URL": "postgres://comicmem:secret@db.internal:5432/comicmem",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "REDIS_URL": "redis://redis.internal:6379/1",
}


def test_check_deploy_on_production_settings_prints_no_warning(tmp_path):
    env = {**os.environ, **PRODUCTION_ENV, "COMICMEM_VAR_DIR": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {key: value for key, value in {**os.environ, **PRODUCTION_ENV}.items() if key != "SECRET_KEY"}
    env["COMICMEM_VAR_DIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_docker_compose_file_is_valid_and_scales_workers():
    if shutil.which("docker-compose") is None:
        service_unavailable("docker-compose is not installed (make sysdeps installs it as root)")

    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SECRET_KEY": "x" * 50},
    )

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "beat"}
    for name in services:
        assert "healthcheck" in services[name], f"{name} has no health check"
    # `--scale worker=N` needs a worker without a fixed name or published port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert "gunicorn" in " ".join(services["web"]["command"])
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert services["worker"]["environment"]["CELERY_BROKER_URL"].startswith("redis://")
    assert "DatabaseScheduler" in " ".join(services["beat"]["command"]) or "-S" in services["beat"]["command"]

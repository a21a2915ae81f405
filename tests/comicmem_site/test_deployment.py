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


def test_production_settings_put_both_blob_storages_on_the_bucket(tmp_path):
    env = {
        **os.environ,
        **PRODUCTION_ENV,
        "COMICMEM_VAR_DIR": str(tmp_path),
        "AWS_STORAGE_BUCKET_NAME": "comics",
        "AWS_S3_ENDPOINT_URL": "http://minio.internal:9000",
        "AWS_S3_ADDRESSING_STYLE": "path",
    }
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps({alias: [entry['BACKEND'], entry.get('OPTIONS', {}).get('location'), "
        "entry.get('OPTIONS', {}).get('bucket_name')] for alias, entry in settings.STORAGES.items()}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout.strip().splitlines()[-1]) == {
        "default": ["storages.backends.s3.S3Storage", "media", "comics"],
        "cache": ["storages.backends.s3.S3Storage", "cache", "comics"],
        "staticfiles": ["whitenoise.storage.CompressedStaticFilesStorage", None, None],
    }


def test_an_unknown_storage_backend_stops_start_up_naming_it(tmp_path):
    env = {**os.environ, **PRODUCTION_ENV, "COMICMEM_VAR_DIR": str(tmp_path), "STORAGE_BACKEND": "ftp"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "STORAGE_BACKEND must be one of local, s3, not 'ftp'" in result.stderr


def compose_config(**environment: str) -> dict:
    """The compose file as docker-compose reads it (interpolated, anchors merged): `docker-compose config`."""
    if shutil.which("docker-compose") is None:
        service_unavailable("docker-compose is not installed (make sysdeps installs it as root)")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("METRICS_", "GRAFANA_"))}
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "SECRET_KEY": "x" * 50, **environment},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_docker_compose_file_is_valid_and_scales_workers():
    config = compose_config()

    services = config["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "minio",
        "minio-bucket",
        "web",
        "worker",
        "beat",
        "flower",
        "prometheus",
        "grafana",
    }
    for name in services:
        assert "healthcheck" in services[name], f"{name} has no health check"
    # `--scale worker=N` needs a worker without a fixed name or published port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert "gunicorn" in " ".join(services["web"]["command"])
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert services["worker"]["environment"]["CELERY_BROKER_URL"].startswith("redis://")
    assert "DatabaseScheduler" in " ".join(services["beat"]["command"]) or "-S" in services["beat"]["command"]
    # Every app service keeps its blobs in the MinIO bucket, created by the one-shot before any of them starts.
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["STORAGE_BACKEND"] == "s3"
        assert environment["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["AWS_STORAGE_BUCKET_NAME"] == "comicmem"
        assert services[name]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert "mc mb --ignore-existing" in " ".join(services["minio-bucket"]["entrypoint"])
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"


def run_shell(command: list[str], *, tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """A service's `sh -c` command as its container would run it (`$$` is compose's escape for `$`)."""
    assert command[:2] == ["sh", "-c"]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", **environment}
    return subprocess.run(
        ["sh", "-c", command[2].replace("$$", "$")], capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path
    )


def test_flower_runs_by_default_behind_the_metrics_basic_auth(tmp_path):
    services = compose_config(METRICS_PASSWORD="s3cret")["services"]
    flower = services["flower"]

    assert "profiles" not in flower
    assert flower["build"]["context"] == str(REPO_ROOT / "deploy" / "flower")
    assert flower["ports"] == [{"published": 5555, "target": 5555}]
    assert flower["environment"]["CELERY_BROKER_URL"] == services["worker"]["environment"]["CELERY_BROKER_URL"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    # Workers send the task events Flower shows.
    assert services["worker"]["environment"]["CELERY_WORKER_SEND_TASK_EVENTS"] == "true"
    # Its command starts Flower on the broker with basic auth prometheus:<METRICS_PASSWORD> (the user of /metrics);
    # a stand-in `celery` shows what it was given.
    celery = tmp_path / "celery"
    celery.write_text('#!/bin/sh\necho "auth=$FLOWER_BASIC_AUTH args=$*"\n')
    celery.chmod(0o755)
    started = run_shell(flower["command"], tmp_path=tmp_path, **flower["environment"])
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "auth=prometheus:s3cret args=--broker=redis://redis:6379/0 flower --port=5555"


def test_flower_prometheus_and_grafana_refuse_to_start_without_a_password(tmp_path):
    services = compose_config()["services"]
    commands = {
        "flower": services["flower"]["command"],
        "prometheus": services["prometheus"]["entrypoint"],
        "grafana": services["grafana"]["entrypoint"],
    }
    celery = tmp_path / "celery"
    celery.write_text("#!/bin/sh\necho started\n")
    celery.chmod(0o755)

    for name, command in commands.items():
        environment = {key: str(value) for key, value in (services[name].get("environment") or {}).items()}
        refused = run_shell(command, tmp_path=tmp_path, **environment)

        assert refused.returncode == 1, name
        assert refused.stdout == "", name
        assert "PASSWORD" in refused.stderr and refused.stderr.startswith(f"{name}: set "), refused.stderr


def test_prometheus_and_grafana_come_with_the_monitoring_profile():
    services = compose_config(METRICS_PASSWORD="s3cret", GRAFANA_ADMIN_PASSWORD="g")["services"]

    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest"), name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), source
    # Prometheus has no login: published on the host's loopback only.
    [published] = services["prometheus"]["ports"]
    assert str(published).startswith("127.0.0.1:") or published.get("host_ip") == "127.0.0.1"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "g"
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert services["prometheus"]["environment"]["METRICS_PASSWORD"] == "s3cret"

"""Prometheus with several web processes: gunicorn with gunicorn.conf.py, requests spread over its workers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# The WSGI app (sync workers) and the ASGI app on uvicorn workers, as `make run` and docker-compose serve it.
SERVED_AS = {
    "wsgi": ["comicmem_site.wsgi"],
    "asgi": ["comicmem_site.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker"],
}


@pytest.mark.parametrize("served_as", sorted(SERVED_AS))
def test_every_gunicorn_worker_counts_into_one_scrape(transactional_db, tmp_path, served_as):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"from an earlier run")
    port = free_port()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), METRICS_TOKEN="scrape-token")
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "-c",
                "gunicorn.conf.py",
                *SERVED_AS[served_as],
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "3",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    get(f"{base}/api/health/")
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                    time.sleep(0.2)
            assert not stale.exists()  # emptied at start (on_starting)
            # Counted from a first scrape: a readiness probe that timed out on a loaded machine may still have
            # been served (and counted) after the client gave up.
            status, before = get(f"{base}/metrics", {"Authorization": "Bearer scrape-token"})
            assert status == 200
            for _ in range(30):
                get(f"{base}/api/health/")
            status, after = get(f"{base}/metrics", {"Authorization": "Bearer scrape-token"})
        finally:
            server.terminate()
            server.wait(timeout=30)

    assert status == 200
    assert health_served(before) >= 1  # the readiness probe that answered
    # 30 requests, whichever of the three workers served each one and whichever answers each scrape.
    assert health_served(after) - health_served(before) == 30


def health_served(body: bytes) -> float:
    served = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "comicmem_http_requests_total" and sample.labels["route"] == "health":
                served += sample.value
    return served

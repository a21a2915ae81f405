"""`make run` from nothing: migrate, demo user, web + worker + beat, and Ctrl-C stops all three."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_make_run_serves_health_admin_docs_and_runs_tasks(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "MAKEFLAGS"}
    }
    env.update(COMICMEM_VAR_DIR=str(tmp_path / "var"), PORT=str(port), PYTHONUNBUFFERED="1")
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                status, body = fetch(f"{base}/api/health/")
            except OSError:
                time.sleep(0.5)
                continue
            if status == 200:
                health = json.loads(body)
                break
            time.sleep(0.5)
        output = (tmp_path / "run.log").read_text(errors="replace")
        assert health is not None, f"/api/health/ not 200 within 60 s:\n{output}"
        assert all(component["ok"] for component in health["data"]["components"].values())
        assert "Created the staff user 'demo'" in output
        assert fetch(f"{base}/admin/login/")[0] == 200
        docs_status, docs = fetch(f"{base}/api/docs/")
        assert docs_status == 200 and b"swagger" in docs.lower()

        ping = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "python"), "manage.py", "ping_worker", "--timeout", "60"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr + (tmp_path / "run.log").read_text(errors="replace")
        assert "answered in" in ping.stdout
        children = psutil.Process(process.pid).children(recursive=True)
        commands = " ".join(" ".join(child.cmdline()) for child in children)
        assert "gunicorn" in commands and "worker" in commands and "beat" in commands
    finally:
        # Ctrl-C in a terminal reaches the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("make run did not stop within 30 s of Ctrl-C")
        log.close()
    time.sleep(1)
    leftovers = [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == [], f"still running after Ctrl-C: {[child.cmdline() for child in leftovers]}"

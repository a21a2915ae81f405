"""gunicorn's control socket: off by default (its default path is shared by every instance of a home directory),
under var/ when GUNICORN_CONTROL_SOCKET names it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.test_gunicorn_metrics import free_port, get

pytestmark = pytest.mark.integration

APP = (
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'ok']\n"
)


def start_gunicorn(tmp_path: Path, port: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    (tmp_path / "hello.py").write_text(APP)
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "-c",
            str(REPO_ROOT / "gunicorn.conf.py"),
            "--chdir",
            str(tmp_path),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "hello:app",
        ],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_serving(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gunicorn on {port} did not serve")


def test_two_instances_start_without_a_control_socket_error_and_nothing_under_home(tmp_path):
    home, var = tmp_path / "home", tmp_path / "var"
    home.mkdir()
    env = {"HOME": str(home), "COMICMEM_VAR_DIR": str(var), "XDG_RUNTIME_DIR": ""}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    ports = [free_port(), free_port()]
    processes = [start_gunicorn(tmp_path, port, log, **env) for port, log in zip(ports, logs, strict=True)]
    try:
        for port in ports:
            wait_serving(port)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)

    text = "".join(log.read_text() for log in logs)
    assert "Address already in use" not in text
    assert "control" not in text.lower()
    assert not (home / ".gunicorn").exists()


def test_a_named_control_socket_lives_under_var(tmp_path):
    home, var = tmp_path / "home", tmp_path / "var"
    home.mkdir()
    env = {"HOME": str(home), "COMICMEM_VAR_DIR": str(var), "GUNICORN_CONTROL_SOCKET": "gunicorn.ctl"}
    port = free_port()
    process = start_gunicorn(tmp_path, port, tmp_path / "gunicorn.log", **env)
    try:
        wait_serving(port)
        deadline = time.monotonic() + 10
        while not (var / "gunicorn.ctl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (var / "gunicorn.ctl").is_socket()
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not (home / ".gunicorn").exists()

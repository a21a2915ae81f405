"""gunicorn on a free loopback port, as a child process, with the benchmark's settings."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from pathlib import Path

from bench.core import REPO_ROOT, child_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """``gthread`` workers: keep-alive connections, so the load generator's connections persist like a proxy's."""

    def __init__(self, *, database_url: str, log_path: Path, workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        gunicorn = str(Path(__import__("sys").executable).with_name("gunicorn"))
        command = [
            gunicorn,
            "comicmem_site.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
            f"--workers={workers}",
            "--worker-class=gthread",
            f"--threads={threads}",
            "--keep-alive=30",
            "--error-logfile=-",
        ]
        env = child_env(DJANGO_SETTINGS_MODULE="bench.settings", DATABASE_URL=database_url)
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/api/health/")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Gunicorn:
        try:
            self.wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

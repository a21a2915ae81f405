"""gunicorn settings read by `gunicorn -c gunicorn.conf.py`: threads, and Prometheus multiprocess bookkeeping.

Every gunicorn worker writes its metrics to PROMETHEUS_MULTIPROC_DIR (memory_app.metrics); /metrics sums them.
The control socket (gunicorn 25.1+, for ``gunicornc``) is off unless GUNICORN_CONTROL_SOCKET names a path (a relative
one is under COMICMEM_VAR_DIR): its default lives under the home directory, shared by every instance of the machine,
so a second instance logged an address-in-use error for it.
Each worker runs GUNICORN_THREADS threads (4; `--threads` on the command line wins); the app lets LLM calls take
at most half of them (memory_app.services.llm_slots), so a health check always finds a free thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _var_dir() -> Path:
    return Path(os.environ.get("COMICMEM_VAR_DIR", Path(__file__).resolve().parent / "var"))


def _metrics_dir() -> Path:
    # The same default as the settings (var/prometheus), so web, worker and beat of `make run` share it.
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", _var_dir() / "prometheus")).resolve()


# The control socket: off, or where GUNICORN_CONTROL_SOCKET says (relative: under var/), never the home directory.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
if _control_socket:
    control_socket = str((_var_dir() / _control_socket).resolve())
else:
    control_socket_disable = True


# gthread workers: a worker whose threads are held by slow LLM calls still has threads for other requests.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))


def on_starting(server: Any) -> None:
    # Files of an earlier run's processes would be summed forever: start from an empty folder.
    path = _metrics_dir()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # The workers inherit it: the app's default bound on LLM calls per process is half of these threads.
    os.environ["COMICMEM_WEB_THREADS"] = str(server.cfg.threads)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # prometheus-client has no hints

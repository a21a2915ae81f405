"""gunicorn settings read by `gunicorn -c gunicorn.conf.py`: threads, and Prometheus multiprocess bookkeeping.

Every gunicorn worker writes its metrics to PROMETHEUS_MULTIPROC_DIR (memory_app.metrics); /metrics sums them.
Each worker runs GUNICORN_THREADS threads (4; `--threads` on the command line wins); the app lets LLM calls take
at most half of them (memory_app.services.llm_slots), so a health check always finds a free thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _metrics_dir() -> Path:
    # The same default as the settings (var/prometheus), so web, worker and beat of `make run` share it.
    var_dir = Path(os.environ.get("COMICMEM_VAR_DIR", Path(__file__).resolve().parent / "var"))
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", var_dir / "prometheus")).resolve()


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

    multiprocess.mark_process_dead(worker.pid)

"""``python -m bench`` (``make bench``): run the benchmarks, print one table, write the same figures as JSON.

The full run needs PostgreSQL and Redis (``BENCH_DATABASE_URL``, ``BENCH_REDIS_URL``; the database is created
and migrated here; the Redis database is used by the benchmark alone). ``--smoke`` runs tiny sizes in seconds on
SQLite with the embedded broker and cache, unless those variables say otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

SECTIONS = ("cache", "http", "history", "workflows", "memory", "search", "vectors")
# Run only when asked for by --only: longer than the default run (ten million history records).
OPT_IN = ("scale",)
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/comicmem_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds, SQLite alone is enough")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS + OPT_IN)}"
    )
    parser.add_argument("--output", type=Path, default=None, help="folder for the JSON, logs and state (var/bench)")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.only.split(",")) - set(SECTIONS + OPT_IN)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return arguments


def _create_postgres_database(url: str) -> None:
    """Create the benchmark's own database if it is missing (connecting to the server's maintenance database)."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    maintenance = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _configure(arguments: argparse.Namespace) -> dict[str, object]:
    """Point this process (and every process it starts) at the benchmark's database, broker and folders."""
    from bench import core

    output = (arguments.output or core.BENCH_DIR).resolve()
    output.mkdir(parents=True, exist_ok=True)
    core.BENCH_DIR = output
    os.environ["COMICMEM_BENCH_DIR"] = str(output)
    if arguments.smoke:
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{output / 'smoke.sqlite3'}"
        redis_url = os.environ.get("BENCH_REDIS_URL", "")
    else:
        database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE
        redis_url = os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "TEST_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=database_url,
        COMICMEM_VAR_DIR=str(output / "var"),
        CACHE_DIR=str(output / "cache"),
    )
    if redis_url:
        os.environ.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url)
    if database_url.startswith("postgres"):
        _create_postgres_database(database_url)
    http_databases = {"PostgreSQL" if database_url.startswith("postgres") else "SQLite": database_url}
    if not arguments.smoke:
        http_databases["SQLite"] = f"sqlite:///{output / 'http.sqlite3'}"
    return {
        "database_url": database_url,
        "redis_url": redis_url,
        "http_databases": http_databases,
        "output": output,
    }


def _machine() -> dict[str, object]:
    import psutil

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "memory_total_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def _format(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def _table(results: list) -> str:
    header = ("#", "benchmark", "measured", "baseline", "ratio", "target", "met")
    rows = [
        (
            row.target,
            row.name,
            f"{_format(row.measured)} {row.unit}",
            f"{_format(row.baseline)} {row.unit} ({row.baseline_name})",
            f"{row.ratio:.3f}",
            f"{row.comparison} {row.limit:g}",
            "yes" if row.met else "NO",
        )
        for row in results
    ]
    widths = [max(len(str(line[column])) for line in [header, *rows]) for column in range(len(header))]
    lines = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _settle(log: Callable[[str], None]) -> None:
    """Leave PostgreSQL quiet for the next section: the rows a section wrote (a million history records) would
    otherwise be vacuumed, analysed and checkpointed by the server while the next one measures."""
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        return
    started = time.monotonic()
    done = []
    with connection.cursor() as cursor:
        # VACUUM needs the tables' owner, CHECKPOINT a superuser or pg_checkpoint: without the right, go on without.
        for statement in ("VACUUM (ANALYZE)", "CHECKPOINT"):
            try:
                cursor.execute(statement)
                done.append(statement)
            except DatabaseError as exc:
                log(f"{statement} between sections failed: {str(exc).strip()}")
    log(f"{' and '.join(done) or 'nothing'} between sections in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    setup = _configure(arguments)

    import django

    django.setup()
    from django.core.management import call_command

    from bench.core import FULL, SMOKE
    from bench.sections import (
        cache,
        history,
        http_api,
        memory,
        object_store,
        peers,
        scale,
        search,
        vectors,
        workflows,
    )

    sizes = SMOKE if arguments.smoke else FULL
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    log(f"migrating {setup['database_url']}")
    call_command("migrate", verbosity=0, interactive=False)
    broker = "Redis" if setup["redis_url"] else "filesystem broker"
    notes: list[str] = []

    def _workflows_and_peers() -> list:
        """Our engine's figures, with the peers' same chain measured between two halves of our chains (so that
        both see the same machine), as ratios to our per step."""
        figures: dict[str, dict | None] = {}

        def measure_peers() -> None:
            figures["peers"] = peers.measure(sizes=sizes, database_url=str(setup["database_url"]), log=log, notes=notes)

        ours = workflows.run(sizes=sizes, broker=broker, alongside=measure_peers)
        per_step = next(row for row in ours if row.name.startswith("workflow step orchestration"))
        return ours + peers.results(
            figures=figures.get("peers"), our_per_step_ms=per_step.measured, log=log, notes=notes
        )

    runners = {
        # The cache's hits on this machine, then an images hit across hosts sharing an S3 store.
        "cache": lambda: cache.run(sizes=sizes) + object_store.run(sizes=sizes),
        "http": lambda: http_api.run(sizes=sizes, databases=setup["http_databases"]),
        "history": lambda: history.run(sizes=sizes, log=log),
        "workflows": _workflows_and_peers,
        "memory": lambda: memory.run(sizes=sizes, database_url=str(setup["database_url"])),
        "search": lambda: search.run(sizes=sizes, log=log),
        "vectors": lambda: vectors.run(sizes=sizes, log=log),
        "scale": lambda: scale.run(sizes=sizes, log=log),
    }
    results = []
    for name in arguments.only.split(","):
        log(f"running {name}")
        results += runners[name]()
        _settle(log)
    table = _table(results)
    print(table)
    sections = arguments.only.split(",")
    subset = sorted(sections) != sorted(SECTIONS)
    command = "python -m bench" + (" --smoke" if arguments.smoke else "")
    command += f" --only {arguments.only}" if subset else ""
    document = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": "smoke" if arguments.smoke else "full",
        "sections": sections,
        "database": urlparse(str(setup["database_url"])).scheme,
        "broker_and_cache": "redis" if setup["redis_url"] else "embedded",
        "seconds": round(time.monotonic() - started, 1),
        "machine": _machine(),
        "results": [row.as_json() for row in results],
        "notes": notes,
    }
    output = Path(str(setup["output"]))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(document, indent=2, ensure_ascii=False)
    # A run of some sections only does not replace the figures of the last whole run.
    label = document["mode"] + ("-" + "-".join(sections) if subset else "")
    (output / f"bench-{label}-{stamp}.json").write_text(text, encoding="utf-8")
    (output / f"latest-{label}.json").write_text(text, encoding="utf-8")
    log(f"figures written to {output / f'latest-{label}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

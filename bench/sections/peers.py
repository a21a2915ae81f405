"""Target 5 against the peers: our per-step time as a ratio to LangGraph's (PostgresSaver, durability "sync") and
DBOS's (durable workflow and steps), each running the same ten-step chain with about 1 KB of state on the same
PostgreSQL server, measured in the same run between two halves of ours (``workflows.run``'s ``alongside``), so a
machine that slows down for a while slows both alike.

The peers live in their own virtualenv (``.venv-bench``, ``make bench-peers`` installs ``requirements-bench.txt``
there; their pins conflict with ours, and they are never runtime dependencies): ``bench/peers.py`` runs there as a
subprocess and prints its figures as JSON. Without that virtualenv, or without PostgreSQL, the comparison is
skipped with a note (the smoke run on SQLite always skips it).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.core import REPO_ROOT, Result, Sizes, result

PEERS = {
    "langgraph": "LangGraph (PostgresSaver, durability sync)",
    "dbos": "DBOS (durable workflow + steps)",
}


def peers_python() -> Path:
    """The peers' interpreter: ``BENCH_PEERS_PYTHON``, or ``.venv-bench/bin/python`` in the repository."""
    return Path(os.environ.get("BENCH_PEERS_PYTHON") or REPO_ROOT / ".venv-bench" / "bin" / "python")


def measure(*, sizes: Sizes, database_url: str, log: Callable[[str], None], notes: list[str]) -> dict | None:
    """The peers' figures (``bench/peers.py``'s JSON), or None with a note when they cannot run here."""
    python = peers_python()
    if not database_url.startswith("postgres"):
        notes.append("peers skipped: they run on PostgreSQL, and this run's database is not")
        log(notes[-1])
        return None
    if not python.exists():
        notes.append(f"peers skipped: no virtualenv at {python} (make bench-peers installs requirements-bench.txt)")
        log(notes[-1])
        return None
    log(f"peers: {', '.join(PEERS)} with {python}")
    completed = subprocess.run(
        [
            str(python),
            str(REPO_ROOT / "bench" / "peers.py"),
            "--database-url",
            database_url,
            "--chains",
            str(sizes.peer_chains),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        figures: dict = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"bench/peers.py failed ({completed.returncode}): {completed.stderr[-2000:]}") from None
    return figures


def results(
    *, figures: dict | None, our_per_step_ms: float, log: Callable[[str], None], notes: list[str]
) -> list[Result]:
    """Our per step as a ratio to each peer's."""
    rows: list[Result] = []
    for name, label in PEERS.items() if figures is not None else ():
        peer = figures.get(name, {})
        if "per_step_ms" not in peer:
            notes.append(f"peer {name} not measured: {peer.get('error', 'no figure')}")
            log(notes[-1])
            continue
        rows.append(
            result(
                target="5",
                name=f"workflow per step, ours vs {label}",
                measured=our_per_step_ms,
                baseline=peer["per_step_ms"],
                unit="ms",
                baseline_name=f"{name} {peer['version']} per step, same chain, same PostgreSQL",
                # LangGraph's per step is the bound; DBOS's is shown beside it, with the same bound.
                limit=1.0,
                comparison="<=",
                peer={key: value for key, value in peer.items() if key != "per_step_ms"},
            )
        )
    return rows

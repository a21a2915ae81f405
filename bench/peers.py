"""The peers' side of the per-step comparison, run by ``bench/sections/peers.py`` in the peers' own virtualenv
(``.venv-bench``, from ``requirements-bench.txt``): never imported by the project, which does not depend on them.

Each peer runs the same chain as ours (ten trivial steps, about 1 KB of state, each step's result made durable
in PostgreSQL before the next step starts) on the same PostgreSQL server, in a database of its own:

- LangGraph: a ``StateGraph`` of ten nodes in a line, checkpointed by ``PostgresSaver`` with durability "sync"
  (each step's checkpoint is written before the next step runs);
- DBOS: a ``@DBOS.workflow()`` calling ten ``@DBOS.step()`` functions (each step's output is recorded in the
  system database before the workflow goes on).

Usage: ``.venv-bench/bin/python bench/peers.py --database-url postgres://… --chains 5``; prints one JSON object
``{"langgraph": {...}, "dbos": {...}}`` with each peer's per-step milliseconds, or its error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TypedDict
from urllib.parse import urlparse

STEPS = 10
# About 1 KB of state, as our chain carries.
PAYLOAD = "x" * 1000


def _database(url: str, suffix: str) -> str:
    """The URL of ``<database>_<suffix>`` on the same server, created if it is missing."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = f"{parsed.path.lstrip('/')}_{suffix}"
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return parsed._replace(path=f"/{name}").geturl()


def _figures(chain: Callable[[], Any], chains: int) -> dict[str, Any]:
    chain()  # warm: connections opened, tables created, code paths loaded
    seconds = []
    for _ in range(chains):
        start = time.perf_counter()
        chain()
        seconds.append(time.perf_counter() - start)
    return {
        "per_step_ms": round(statistics.median(seconds) / STEPS * 1000, 3),
        "chain_seconds": [round(value, 4) for value in seconds],
        "steps": STEPS,
        "state_bytes": len(PAYLOAD),
    }


class ChainState(TypedDict):
    payload: str
    count: int


def langgraph(url: str, chains: int) -> dict[str, Any]:
    from importlib.metadata import version

    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph

    def step(state: ChainState) -> dict[str, Any]:
        return {"payload": state["payload"], "count": state["count"] + 1}

    builder = StateGraph(ChainState)
    previous = START
    for index in range(STEPS):
        builder.add_node(f"step_{index}", step)
        builder.add_edge(previous, f"step_{index}")
        previous = f"step_{index}"
    builder.add_edge(previous, END)
    with PostgresSaver.from_conn_string(_database(url, "langgraph")) as checkpointer:
        checkpointer.setup()
        graph = builder.compile(checkpointer=checkpointer)

        def chain() -> None:
            config = {"configurable": {"thread_id": str(uuid.uuid4())}}
            final = graph.invoke({"payload": PAYLOAD, "count": 0}, config, durability="sync")
            if final["count"] != STEPS:
                raise RuntimeError(f"LangGraph ran {final['count']} steps, not {STEPS}")

        figures = _figures(chain, chains)
    return {**figures, "version": version("langgraph"), "checkpointer": "PostgresSaver", "durability": "sync"}


def dbos(url: str, chains: int) -> dict[str, Any]:
    from importlib.metadata import version

    from dbos import DBOS

    @DBOS.step()
    def step(state: dict[str, Any]) -> dict[str, Any]:
        return {"payload": state["payload"], "count": state["count"] + 1}

    @DBOS.workflow()
    def workflow(state: dict[str, Any]) -> dict[str, Any]:
        for _ in range(STEPS):
            state = step(state)
        return state

    DBOS(config={"name": "comicmem-bench-peers", "system_database_url": _database(url, "dbos")})
    DBOS.launch()
    try:

        def chain() -> None:
            final = workflow({"payload": PAYLOAD, "count": 0})
            if final["count"] != STEPS:
                raise RuntimeError(f"DBOS ran {final['count']} steps, not {STEPS}")

        figures = _figures(chain, chains)
    finally:
        DBOS.destroy()
    return {**figures, "version": version("dbos"), "durable": "workflow + steps"}


PEERS: dict[str, Callable[[str, int], dict[str, Any]]] = {"langgraph": langgraph, "dbos": dbos}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--only", default=",".join(PEERS))
    arguments = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    for name in arguments.only.split(","):
        try:
            figures[name] = PEERS[name](arguments.database_url, arguments.chains)
        except Exception as exc:  # noqa: BLE001 - one peer failing is reported, the other still measured
            traceback.print_exc(file=sys.stderr)
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

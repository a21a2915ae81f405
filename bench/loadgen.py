"""A small load generator: N threads, each with its own keep-alive ``http.client`` connection, sending requests
for a bounded time. Counts answers with the expected status; anything else is an error (reported)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    first_error: str

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def run_load(
    *,
    port: int,
    connections: int,
    seconds: float,
    request_for: Callable[[int], tuple[str, str, dict[str, str], bytes]],
    expected_status: int,
    warmup_seconds: float = 0.5,
) -> LoadResult:
    """``request_for(connection_index)`` gives (method, path, headers, body) for each request of that connection."""
    counts = [0] * connections
    errors = [0] * connections
    first_error: list[str] = []
    measuring = threading.Event()
    stop = threading.Event()

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            method, path, headers, body = request_for(index)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == expected_status
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                ok, payload = False, repr(exc).encode()
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if measuring.is_set() and not stop.is_set():
                if ok:
                    counts[index] += 1
                else:
                    errors[index] += 1
                    if not first_error:
                        first_error.append(payload[:300].decode(errors="replace"))
        connection.close()

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(warmup_seconds)
    measuring.set()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join(timeout=35)
    return LoadResult(sum(counts), sum(errors), elapsed, first_error[0] if first_error else "")


def json_post(path: str, token: str, payload: object) -> tuple[str, str, dict[str, str], bytes]:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    return "POST", path, headers, json.dumps(payload).encode()

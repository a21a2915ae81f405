"""Target 6: the resident size of a web process does not grow with the number of contexts it served.

One gunicorn worker (one thread) serves every request, so its RSS is the web process's; the requests come over a
keep-alive connection from this process. (Django's test client is not used: it leaks a little per request itself,
through the signal receivers it connects, and would be measured instead of the product.)
"""

from __future__ import annotations

import http.client
import json
import math

import psutil

from bench.core import BENCH_DIR, Result, Sizes, result
from bench.server import Gunicorn

CONTEXTS_PER_USER = 10  # the default max_contexts_per_user: the contexts are spread over as many users as needed


def _users(count: int) -> list[str]:
    """``count`` fresh users with their tokens (bulk: no password hashing); returns the token keys."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    user_model.objects.filter(username__startswith="bench-memory-").delete()
    user_model.objects.bulk_create(
        [user_model(username=f"bench-memory-{index}", password="!") for index in range(count)], batch_size=1000
    )
    users = list(user_model.objects.filter(username__startswith="bench-memory-").order_by("id"))
    tokens = Token.objects.bulk_create([Token(user=user, key=Token.generate_key()) for user in users], batch_size=1000)
    return [token.key for token in tokens]


def _call(connection: http.client.HTTPConnection, method: str, path: str, token: str, body: object = None) -> dict:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    connection.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    response = connection.getresponse()
    payload = response.read()
    if response.status not in (200, 201):
        raise RuntimeError(f"{method} {path} answered {response.status}: {payload[:300]!r}")
    return json.loads(payload)


def run(*, sizes: Sizes, database_url: str) -> list[Result]:
    small, large = sizes.memory_contexts
    tokens = _users(math.ceil(large / CONTEXTS_PER_USER))
    batch = {
        "messages": [
            {"role": "user" if index % 2 == 0 else "assistant", "content": f"台词 {index}: the hero opens the door."}
            for index in range(sizes.memory_messages)
        ]
    }
    rss: dict[int, int] = {}
    with Gunicorn(
        database_url=database_url, log_path=BENCH_DIR / "gunicorn-memory.log", workers=1, threads=1
    ) as server:
        (worker,) = psutil.Process(server.process.pid).children()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for number in range(large):
            token = tokens[number // CONTEXTS_PER_USER]
            context_id = _call(connection, "POST", "/api/context/", token, {})["data"]["context_id"]
            _call(connection, "POST", f"/api/context/{context_id}/messages", token, batch)
            read = _call(connection, "GET", f"/api/context/{context_id}/messages", token)
            if len(read["data"]["results"]) != sizes.memory_messages:
                raise RuntimeError(f"context {context_id} read back {len(read['data']['results'])} messages")
            if number + 1 in (small, large):
                rss[number + 1] = worker.memory_info().rss
        connection.close()
    mib = 1 << 20
    return [
        result(
            target="6",
            name=f"web process RSS after {large:,} vs {small:,} contexts of {sizes.memory_messages} messages",
            measured=rss[large] / mib,
            baseline=rss[small] / mib,
            unit="MiB",
            baseline_name=f"RSS after {small:,} contexts",
            # "Does not grow": allowed 10 % for the allocator's and the interpreter's own noise.
            limit=1.10,
            comparison="<=",
        )
    ]

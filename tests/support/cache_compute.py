"""A process that asks the cache for one key, for the compute-once lock's fault tests.

``python -m tests.support.cache_compute NAMESPACE KEY VALUE SECONDS [--lock-ttl N] [--go FILE] [--until FILE]``:
sets Django up, prints ``ready``, waits for the ``--go`` file to exist (if given), then calls
``cache_get_or_compute``. Its computation prints ``computing``, takes SECONDS (and lasts until the ``--until`` file
exists, if given) and returns VALUE (bytes); at the end the process prints ``result <value>``. Each line is flushed
at once, so the test can act (kill, stop) while the computation runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def wait_for(name: str | None) -> None:
    while name and not Path(name).exists():
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("key")
    parser.add_argument("value")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--lock-ttl", type=int)
    parser.add_argument("--go")
    parser.add_argument("--until")
    arguments = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from memory_app.services.cache import cache_get_or_compute

    if arguments.lock_ttl:
        options = settings.MEMORY.cache_options.model_copy(update={"lock_ttl": arguments.lock_ttl})
        settings.MEMORY = settings.MEMORY.model_copy(update={"cache_options": options})
    print("ready", flush=True)
    wait_for(arguments.go)

    def compute() -> bytes:
        print("computing", flush=True)
        time.sleep(arguments.seconds)
        wait_for(arguments.until)
        return arguments.value.encode()

    value = cache_get_or_compute(namespace=arguments.namespace, key=arguments.key, compute=compute)
    print(f"result {value.decode()}", flush=True)


if __name__ == "__main__":
    main()

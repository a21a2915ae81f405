"""The embedded default: `make run` on one machine, no servers, no environment variables needed."""

from __future__ import annotations

import secrets

from comicmem_site.settings.base import *  # noqa: F403
from comicmem_site.settings.base import MEMORY, VAR_DIR, env, throttle_rates

DEBUG = env.bool("DEBUG", default=True)
# API_THROTTLE_DISABLED=1 lifts every rate for a local fuzzing run, with DEBUG on only (docs/api.md).
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": throttle_rates(DEBUG)}  # noqa: F405

# Webhooks to loopback URLs are allowed on a developer's own machine (WEBHOOKS_ALLOW_LOOPBACK=0 turns it off).
MEMORY = MEMORY.model_copy(
    update={
        "webhooks": MEMORY.webhooks.model_copy(
            update={"allow_loopback": env.bool("WEBHOOKS_ALLOW_LOOPBACK", default=True)}
        )
    }
)


def _local_secret_key() -> str:
    # A key made once per checkout and kept under var/, so sessions and tokens survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()

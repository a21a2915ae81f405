"""Production: PostgreSQL, Redis, gunicorn behind TLS. Everything secret or host-specific comes from the
environment; `manage.py check --deploy` passes with no warning."""

from __future__ import annotations

from comicmem_site.settings.base import *  # noqa: F403
from comicmem_site.settings.base import env, logging_config, throttle_rates

DEBUG = False
# Refuses API_THROTTLE_DISABLED: production keeps its rates.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": throttle_rates(DEBUG)}  # noqa: F405
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# TLS ends at the proxy in front of gunicorn, which says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# That proxy appends the client's address to X-Forwarded-For: throttling trusts only what it added.
REST_FRAMEWORK = {**REST_FRAMEWORK, "NUM_PROXIES": env.int("NUM_PROXIES", default=1)}
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# The orchestrator's health probe speaks plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^api/health/?$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

# One JSON object per log line (request_id, workflow_id, step, user), redacted like history.
LOGGING = logging_config(env.str("LOG_FORMAT", default="json"))
# Workers log through the same JSON handler: Celery would otherwise replace the root logger's handlers with its
# own plain format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

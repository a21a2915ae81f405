"""Production-shaped settings for the benchmarks: the production module's stack (gunicorn, persistent database
connections, Redis when given) with DEBUG off, no TLS redirect, and a URLconf that adds the bare baseline
endpoint, which exists only here and never in the product's URLs."""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "comicmem-bench-secret-key-not-for-production")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CONN_MAX_AGE", "600")

from comicmem_site.settings.production import *  # noqa: F403
from comicmem_site.settings.production import MIDDLEWARE, REST_FRAMEWORK, WORKFLOW_MODULES

DEBUG = False
SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ROOT_URLCONF = "bench.urls"

# Static files are not served by the benchmarked processes.
MIDDLEWARE = [name for name in MIDDLEWARE if name != "whitenoise.middleware.WhiteNoiseMiddleware"]
# Throttling would cap the load generator; the product's rates are not what is measured.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "10000000/min", "user": "10000000/min", "auth": "10000000/min"},
}
# The per-step benchmark's chain of trivial steps and its bare baseline task.
WORKFLOW_MODULES = [*WORKFLOW_MODULES, "bench.workflow_types"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# The embedded broker polls its folder once a second by default; the smoke run's workflows would mostly wait.
if CELERY_BROKER_URL.startswith("filesystem://"):  # noqa: F405
    CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "polling_interval": 0.05}  # noqa: F405

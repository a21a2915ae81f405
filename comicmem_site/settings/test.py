"""Settings for the test suite: SQLite by default, PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import os
from pathlib import Path

# Tests keep their own broker folder, media and caches, apart from a `make run` on the same checkout.
os.environ.setdefault("COMICMEM_VAR_DIR", str(Path(__file__).resolve().parent.parent.parent / "var" / "test"))
# Each test run has its own Prometheus folder, emptied here; the processes it starts inherit it (environment).
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    import shutil

    for _old in Path(os.environ["COMICMEM_VAR_DIR"]).glob("prometheus-*"):
        # Folders of earlier runs whose process is gone.
        _pid = _old.name.removeprefix("prometheus-")
        if _pid.isdigit() and not Path(f"/proc/{_pid}").exists():
            shutil.rmtree(_old, ignore_errors=True)
    _metrics_dir = Path(os.environ["COMICMEM_VAR_DIR"]) / f"prometheus-{os.getpid()}"
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for _stale in _metrics_dir.glob("*.db"):
        _stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

from comicmem_site.settings.base import *  # noqa: F403
from comicmem_site.settings.base import REST_FRAMEWORK, VAR_DIR, env, sqlite_database

SECRET_KEY = "comicmem-test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A real worker started by an integration test reaches the test database through DATABASE_URL, which
# takes precedence; otherwise TEST_DATABASE_URL selects PostgreSQL and a file under var/ holds SQLite.
if not env.str("DATABASE_URL", default=""):
    if env.str("TEST_DATABASE_URL", default=""):
        DATABASES = {"default": env.db("TEST_DATABASE_URL")}
    else:
        DATABASES = {"default": sqlite_database(VAR_DIR / "test.sqlite3")}
        # A file rather than memory, so a worker in another process sees the same test database.
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DATABASES["default"].setdefault("TEST", {})

if not env.str("REDIS_URL", default=""):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# A worker started by a fault test can be given its own storage backend (one that pauses at a chosen point)
# and the test's media folder.
# A worker started with STORAGE_BACKEND=s3 keeps the S3 storages of base (tests of the object store).
if STORAGE_BACKEND == "local":  # noqa: F405
    STORAGES = {
        **STORAGES,  # noqa: F405
        "default": {"BACKEND": env.str("COMICMEM_TEST_STORAGE", default="django.core.files.storage.FileSystemStorage")},
    }
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
MEDIA_ROOT = Path(env.str("COMICMEM_TEST_MEDIA_ROOT", default=str(Path(VAR_DIR) / "media")))
# No timer thread may write cache statistics through its own connection while a test holds the database in a
# transaction: tests read them through the flush on read. (Processes a test starts keep the timer.)
MEMORY = MEMORY.model_copy(  # noqa: F405
    update={"cache_options": MEMORY.cache_options.model_copy(update={"stats_flush_in_background": False})}  # noqa: F405
)
# File caches of the tests stay under the tests' own folder unless CACHE_DIR says otherwise.
if not env.str("CACHE_DIR", default=""):
    CACHE_DIR = Path(VAR_DIR) / "cache"

# The small pipelines the engine's tests run, registered in the test process and in a test worker alike.
WORKFLOW_MODULES = [*WORKFLOW_MODULES, "tests.workflows.pipelines"]  # noqa: F405

# Throttling is exercised by its own tests with lower rates (a web process such a test starts gets its user rate
# from COMICMEM_TEST_USER_RATE).
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        "anon": "100000/min",
        "user": env.str("COMICMEM_TEST_USER_RATE", default="100000/min"),
        "auth": "100000/min",
        "login": "100000/min",
    },
}

# Static files are collected only for deployment; the tests never serve them.
MIDDLEWARE = [name for name in MIDDLEWARE if name != "whitenoise.middleware.WhiteNoiseMiddleware"]  # noqa: F405

"""Settings shared by every mode. The embedded defaults need no server and no environment variable.

The environment (django-environ) switches a piece to production: ``DATABASE_URL`` (PostgreSQL),
``CELERY_BROKER_URL`` and ``REDIS_URL`` (Redis). ``memory_config.yaml`` is read here into ``MEMORY``.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from comicmem_site.memory_config import MemoryConfigError, load_memory_config
from comicmem_site.settings.object_storage import blob_storages, storage_backend

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# Everything the embedded mode writes (database, broker queue, media, caches) lives under one folder.
VAR_DIR = Path(env.str("COMICMEM_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

os.makedirs(VAR_DIR, exist_ok=True)

# Prometheus multiprocess mode (memory_app.metrics): every process on this machine writes its metrics here and
# /metrics sums them. Set before prometheus_client is first imported, which picks the mode at import time.
PROMETHEUS_MULTIPROC_DIR = Path(env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))).resolve()
os.makedirs(PROMETHEUS_MULTIPROC_DIR, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)

MEMORY_CONFIG_FILE = Path(env.str("MEMORY_CONFIG_FILE", default=str(BASE_DIR / "memory_config.yaml")))
try:
    MEMORY = load_memory_config(MEMORY_CONFIG_FILE)
except MemoryConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

CACHE_DIR = Path(MEMORY.storage.cache_dir)
if not CACHE_DIR.is_absolute():
    # A relative path under var/ follows COMICMEM_VAR_DIR, as everything else the embedded mode writes; any other
    # relative path is the checkout's.
    _parts = CACHE_DIR.parts
    CACHE_DIR = (VAR_DIR.joinpath(*_parts[1:]) if _parts[:1] == ("var",) else BASE_DIR / CACHE_DIR).resolve()

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "django_celery_results",
    "memory_app",
    "workflows",
]

# The security headers come first so that every answer gets them, those of the middleware below included (the
# body limit's 413, the static files).
MIDDLEWARE = [
    "memory_app.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "memory_app.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "memory_app.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Last: reads the answers of the throttle counts an API read sent without waiting (memory_app.api.throttling).
    "memory_app.api.throttling.DeferredThrottleMiddleware",
]

ROOT_URLCONF = "comicmem_site.urls"
WSGI_APPLICATION = "comicmem_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # admin/base_site.html: every admin page gets a CJK font (memory_app/admin/fonts.py).
        "DIRS": [BASE_DIR / "comicmem_site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def sqlite_database(path: Path) -> dict[str, object]:
    """SQLite tuned for several processes: WAL, IMMEDIATE write transactions, a busy timeout, full fsync."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy timeout instead of one
            # failing with "database is locked" when it upgrades a read lock.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # synchronous=FULL: a commit that was acknowledged survives a crash of the process and of the OS.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        },
    }


if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"] = sqlite_database(Path(DATABASES["default"]["NAME"]))
else:
    DATABASES = {"default": sqlite_database(VAR_DIR / "comicmem.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = VAR_DIR / "media"
# Blobs: local folders by default, an S3-compatible bucket with STORAGE_BACKEND=s3 (settings/object_storage.py).
STORAGE_BACKEND = storage_backend(env)
STORAGES = {
    **blob_storages(env, signed_url_max_age=MEMORY.storage.signed_url_max_age),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The API's own body limit (memory.api.max_body_bytes) is enforced before parsing; Django's applies to forms.
DATA_UPLOAD_MAX_MEMORY_SIZE = MEMORY.api.max_body_bytes

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "comicmem",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    # Embedded mode: a cache shared by every process on the machine (web, worker, beat) without a server.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "django_cache"),
            "KEY_PREFIX": "comicmem",
            # The cache layer bounds each namespace itself (max_size, LRU); the file cache's own cull at the
            # default 300 entries would drop keys at random, bookkeeping included.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- Celery -------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
    }
    for _folder in ("queue", "control", "processed"):
        os.makedirs(BROKER_DIR / _folder, exist_ok=True)
else:
    # Every ETA and retry delay is kept below half of this, so Redis never redelivers a message that is only
    # waiting. A dead worker's unacknowledged messages come back after it (recovery has sent their units again
    # long before, through their leases: the returned copies find them done or held, and do nothing).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connection around every task unless this is set: a new connection
# (and its set-up queries) per workflow step. With it, a worker process keeps its connection and closes it after
# this many tasks; around each task ``comicmem_site.celery`` applies Django's own rule, as for a request
# (closed once older than CONN_MAX_AGE or unusable, health-checked before reuse).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_TRACK_STARTED = True
# Task events (received/started/succeeded… and sent) are one more broker message per task and state change, for
# monitors such as Flower or ``celery events``; the metrics (memory_app.metrics) do not need them. Off unless an
# operator watching with such a monitor turns them on (``celery control enable_events`` works too, at run time).
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = env.bool("CELERY_TASK_SEND_SENT_EVENT", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = False
# The maintenance schedules live in django-celery-beat's tables, created by a data migration of memory_app
# (the one named *_maintenance_schedules) and edited by staff in the admin. No CELERY_BEAT_SCHEDULE here: the
# DatabaseScheduler would write it over the staff's edits at every beat start.

# Modules whose import registers workflow types (the pipelines), in the web process and in every worker.
WORKFLOW_MODULES = env.list("WORKFLOW_MODULES", default=[])


# --- REST framework -----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes an anonymous request a 401 rather than a 403.
        "memory_app.api.authentication.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["memory_app.api.envelope.EnvelopeJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "memory_app.api.envelope.LimitedJSONParser",
        "memory_app.api.envelope.CheckedFormParser",
        "memory_app.api.envelope.CheckedMultiPartParser",
    ],
    "EXCEPTION_HANDLER": "memory_app.api.envelope.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "memory_app.api.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": MEMORY.api.default_page_size,
    "DEFAULT_FILTER_BACKENDS": ["memory_app.api.filters.FilterBackend"],
    # DRF's own throttles lose counts to concurrent requests (a read-modify-write of a list in the cache):
    # these count with one atomic increment each (memory_app/api/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "memory_app.api.throttling.AtomicAnonRateThrottle",
        "memory_app.api.throttling.AtomicUserRateThrottle",
    ],
    # As configured; the settings of each mode apply ``api.throttle.disabled`` (``throttle_rates``).
    "DEFAULT_THROTTLE_RATES": {
        "anon": MEMORY.api.throttle.anon,
        "user": MEMORY.api.throttle.user,
        "auth": MEMORY.api.throttle.auth,
        "login": MEMORY.api.throttle.login,
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of us append to X-Forwarded-For. With DRF's default (None) an anonymous
    # client is throttled by the whole header it sends itself, so a new made-up header each time escapes
    # the login throttle. 0: the socket's address (no proxy; production sets its own count).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

# What ``api.throttle.disabled`` (API_THROTTLE_DISABLED) sets every rate to: out of any client's reach, with the
# same code path (a rate of None would switch the wrong-credential counters off in ways they do not expect).
UNREACHABLE_RATE = "1000000/second"


def throttle_rates(debug: bool) -> dict[str, str]:
    """The throttle rates of ``api.throttle``; all ``UNREACHABLE_RATE`` when ``disabled`` is set, which only a
    DEBUG run honours (a fuzzing run against ``make run``): elsewhere it stops start-up with a message."""
    throttle = MEMORY.api.throttle
    rates = {"anon": throttle.anon, "user": throttle.user, "auth": throttle.auth, "login": throttle.login}
    if not throttle.disabled:
        return rates
    if not debug:
        raise ImproperlyConfigured(
            "API_THROTTLE_DISABLED (memory.api.throttle.disabled) is for a local fuzzing run only: it needs DEBUG "
            "on (the embedded default of `make run`). Unset it here."
        )
    return dict.fromkeys(rates, UNREACHABLE_RATE)


SPECTACULAR_SETTINGS = {
    "TITLE": "comicmem API",
    "DESCRIPTION": (
        "The memory system of an AI comic-generation platform. Every response is wrapped in the envelope "
        '`{"success", "data" | "error", "metadata"}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    # Bodies are documented as JSON only: form encodings carry no types (every value a string) and the API's
    # strict fields refuse them, so a client that follows the schema must send JSON.
    "PARSER_WHITELIST": ["memory_app.api.envelope.LimitedJSONParser"],
    # A required text field refuses "" (DRF's allow_blank=False): say so with minLength 1.
    "ENFORCE_NON_BLANK_FIELDS": True,
    # A webhook delivery's status and a run's status are two vocabularies: the run's keeps its name.
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "memory_app.models.workflow.WorkflowStatus",
        "WebhookDeliveryStatusEnum": "memory_app.models.webhooks.WebhookDeliveryStatus",
        "WebhookEventEnum": "memory_app.models.webhooks.WEBHOOK_EVENT_CHOICES",
        "SearchKindEnum": "memory_app.models.search.SearchKind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "memory_app.api.schema.wrap_responses_in_envelope",
        # OpenAPI links from each creating response to the operations that take the new id (after the envelope:
        # the links point into it).
        "memory_app.api.schema_links.add_links",
    ],
}

# --- Logging: every line of a request carries its request id ------------------------------------------------
# Local mode: a plain line. Production (LOG_FORMAT=json, the production settings' default): one JSON object per
# line with request_id, workflow_id, step and user, redacted like history (memory_app.logging).
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")


def logging_config(log_format: str) -> dict[str, object]:
    if log_format not in {"plain", "json"}:
        raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_context": {"()": "memory_app.logging.RequestContextFilter"}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
            "json": {"()": "memory_app.logging.RedactingJsonFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["request_context"]},
        },
        "root": {"handlers": ["console"], "level": LOG_LEVEL},
        "loggers": {
            "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
            "celery": {"level": "INFO"},
        },
    }


LOGGING = logging_config(LOG_FORMAT)

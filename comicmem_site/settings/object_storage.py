"""Which Django storages hold the blobs: local folders (the embedded default) or an S3-compatible bucket.

``STORAGE_BACKEND=s3`` (or ``AWS_STORAGE_BUCKET_NAME`` set without ``STORAGE_BACKEND``) selects django-storages'
S3 backend for both aliases: ``default`` (outputs, archives, released contexts, backups) under the ``media/``
prefix and ``cache`` (file cache blobs) under ``cache/``, in one bucket every host shares.
"""

from __future__ import annotations

from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

STORAGE_BACKENDS = ("local", "s3")


def storage_backend(env: environ.Env) -> str:
    default = "s3" if env.str("AWS_STORAGE_BUCKET_NAME", default="") else "local"
    backend = env.str("STORAGE_BACKEND", default=default).strip().lower() or default
    if backend not in STORAGE_BACKENDS:
        raise ImproperlyConfigured(f"STORAGE_BACKEND must be one of {', '.join(STORAGE_BACKENDS)}, not {backend!r}.")
    return backend


def s3_options(env: environ.Env, *, location: str, signed_url_max_age: int) -> dict[str, Any]:
    """django-storages' S3 options from the environment, for one prefix of the bucket."""
    from botocore.config import Config

    bucket = env.str("AWS_STORAGE_BUCKET_NAME", default="")
    if not bucket:
        raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME.")
    addressing = env.str("AWS_S3_ADDRESSING_STYLE", default="auto")
    if addressing not in ("auto", "path", "virtual"):
        raise ImproperlyConfigured(f"AWS_S3_ADDRESSING_STYLE must be auto, path or virtual, not {addressing!r}.")
    return {
        "bucket_name": bucket,
        "location": location,
        "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
        "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
        "access_key": env.str("AWS_ACCESS_KEY_ID", default="") or None,
        "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default="") or None,
        "querystring_auth": True,
        "querystring_expire": signed_url_max_age,
        # Content-addressed or single-writer names: a second write of a name carries the same bytes.
        "file_overwrite": True,
        "default_acl": None,
        # Every call has a timeout; a store out of reach fails fast, and the workflow step is retried by the engine.
        # (Given a client config, django-storages takes the addressing style and signature version from it alone.)
        "client_config": Config(
            s3={"addressing_style": addressing},
            signature_version="s3v4",
            connect_timeout=env.float("AWS_S3_CONNECT_TIMEOUT", default=5.0),
            read_timeout=env.float("AWS_S3_READ_TIMEOUT", default=30.0),
            retries={"max_attempts": env.int("AWS_S3_MAX_ATTEMPTS", default=3), "mode": "standard"},
        ),
    }


def blob_storages(env: environ.Env, *, signed_url_max_age: int) -> dict[str, dict[str, Any]]:
    """The ``default`` and ``cache`` entries of ``STORAGES``."""
    if storage_backend(env) == "s3":
        return {
            alias: {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": s3_options(env, location=prefix, signed_url_max_age=signed_url_max_age),
            }
            for alias, prefix in (("default", "media"), ("cache", "cache"))
        }
    return {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "cache": {"BACKEND": "memory_app.blob_storage.CacheFileSystemStorage"},
    }

"""Cache layer (seed §4): one row per blob of a file namespace, and the statistics of every namespace."""

from __future__ import annotations

from django.db import models


class CacheValueFormat(models.TextChoices):
    BYTES = "bytes", "bytes"
    JSON = "json", "JSON"


class CacheEntry(models.Model):
    """The metadata of one blob of a file namespace (§4.3). The blob itself lives in the ``cache`` Django storage
    (``CACHE_DIR`` in the embedded mode, the ``cache/`` prefix of the bucket with S3)."""

    namespace = models.CharField(max_length=64)
    # The sha256 of the namespaced canonical key: never user input, so it can name a file.
    key = models.CharField(max_length=64)
    # ``<key>-<first 16 hex digits of the checksum>``: a row always names one immutable blob, so a rewrite of the
    # same key never leaves the row pointing at bytes it did not describe.
    blob_name = models.CharField(max_length=96)
    size_bytes = models.BigIntegerField()
    content_type = models.CharField(max_length=100)
    value_format = models.CharField(max_length=8, choices=CacheValueFormat.choices, default=CacheValueFormat.BYTES)
    compressed = models.BooleanField(default=False)
    # sha256 of the bytes on disk (after compression), verified on every read.
    checksum = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    last_accessed_at = models.DateTimeField()
    hit_count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "cache entries"
        ordering = ["namespace", "-last_accessed_at"]
        constraints = [models.UniqueConstraint(fields=["namespace", "key"], name="cache_entry_unique_key")]
        indexes = [
            # LRU eviction: the least recently used entries of a namespace first.
            models.Index(fields=["namespace", "last_accessed_at"], name="cache_entry_lru"),
            models.Index(fields=["expires_at"], name="cache_entry_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.key[:12]}"


class CacheStatistics(models.Model):
    """Counters of one namespace in the embedded mode (production keeps them in Redis), updated with F()."""

    namespace = models.CharField(max_length=64, primary_key=True)
    hits = models.BigIntegerField(default=0)
    misses = models.BigIntegerField(default=0)
    corrupted = models.BigIntegerField(default=0)
    evictions = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "cache statistics"

    def __str__(self) -> str:
        return self.namespace

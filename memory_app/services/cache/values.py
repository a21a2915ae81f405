"""Values: what can be cached (bytes or JSON values), their encoding, gzip above ``compress_threshold``, the packed
form of a memory value, and a namespace's time to live."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.errors import ValidationFailed
from memory_app.models import CacheValueFormat

# Formats whose bytes are compressed already: gzip would only spend CPU on them.
_PRECOMPRESSED_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "application/gzip"})


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    value_format: str
    content_type: str


def _encode(value: Any, *, content_type: str | None) -> _Encoded:
    if isinstance(value, bytes | bytearray | memoryview):
        return _Encoded(bytes(value), CacheValueFormat.BYTES, content_type or "application/octet-stream")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"The value cannot be cached: {exc}. Cache bytes or JSON values.",
            details={"fields": {"value": [str(exc)]}},
        ) from None
    return _Encoded(text.encode("utf-8"), CacheValueFormat.JSON, "application/json")


def _decode(data: bytes, value_format: str) -> Any:
    if value_format == CacheValueFormat.JSON:
        return json.loads(data.decode("utf-8"))
    return data


def _should_compress(size: int, content_type: str, threshold: int | None) -> bool:
    return threshold is not None and size > threshold and content_type not in _PRECOMPRESSED_TYPES


# A memory value is one bytes object: a flag byte, then the (maybe compressed) encoding.
_FLAG_JSON = 1
_FLAG_GZIP = 2


def _pack_memory_value(encoded: _Encoded, threshold: int | None) -> bytes:
    flags = _FLAG_JSON if encoded.value_format == CacheValueFormat.JSON else 0
    data = encoded.data
    if _should_compress(len(data), encoded.content_type, threshold):
        data = gzip.compress(data, mtime=0)
        flags |= _FLAG_GZIP
    return bytes([flags]) + data


def _unpack_memory_value(packed: bytes) -> Any:
    flags, data = packed[0], packed[1:]
    if flags & _FLAG_GZIP:
        data = gzip.decompress(data)
    return _decode(data, CacheValueFormat.JSON if flags & _FLAG_JSON else CacheValueFormat.BYTES)


def _expiry_seconds(config: CacheNamespaceConfig, ttl: int | None) -> int | None:
    """Seconds to live; None = no expiry. A ttl of 0 (in config or per call) means no expiry."""
    seconds = config.ttl if ttl is None else ttl
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        raise ValidationFailed("ttl must be a whole number of seconds, 0 or more.", details={"fields": {"ttl": []}})
    return seconds or None

"""Keys: the canonical JSON of a key and the sha256 digest every layer stores a value under."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from typing import Any

from memory_app.errors import ValidationFailed


def _canonical(value: Any) -> Any:
    """A JSON-ready form that is the same for equal inputs in any process and any Python 3 version.

    Decisions: an integral float equals the int (``1.0`` and ``1`` give one key, as in JSON itself), other
    floats use ``repr`` (shortest round-trip form, stable since Python 3.1); NaN and infinities are refused;
    ``True`` stays distinct from ``1``; tuples are lists; sets are sorted by their members' canonical JSON;
    mapping keys must be strings; bytes become their sha256; aware datetimes become UTC ISO 8601 (naive ones
    are refused: their instant is unknown); dates, times, Decimals and UUIDs are tagged so they never equal a
    string. Any other type is refused rather than turned into ``str()``.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"a cache key cannot hold the float {value!r}")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return {"$float": repr(value)}
    if isinstance(value, dict):
        result = {}
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise TypeError(f"a cache key's mapping keys must be strings, not {type(item_key).__name__}")
            result[item_key] = _canonical(item)
        return result
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, set | frozenset):
        members = [_canonical(item) for item in value]
        return {"$set": sorted(members, key=lambda member: json.dumps(member, sort_keys=True, ensure_ascii=False))}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError("a cache key cannot hold a naive datetime: give it a time zone")
        return {"$datetime": value.astimezone(dt.UTC).isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise TypeError(f"a cache key cannot hold the Decimal {value}")
        return {"$decimal": str(value.normalize())}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    raise TypeError(f"a cache key cannot hold a value of type {type(value).__name__}")


def cache_canonical_json(value: Any) -> str:
    """Canonical JSON of a key (sorted keys, no spaces, UTF-8 text); TypeError names an unusable type."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(*, namespace: str, key: Any) -> str:
    """sha256 (hex) of the namespaced canonical key. ValidationFailed for a key that has no canonical form."""
    try:
        text = cache_canonical_json({"namespace": namespace, "key": key})
    except TypeError as exc:
        raise ValidationFailed(f"Unusable cache key: {exc}.", details={"fields": {"key": [str(exc)]}}) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

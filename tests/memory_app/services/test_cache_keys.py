from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import subprocess
import sys
import uuid

import pytest

from memory_app.errors import ValidationFailed
from memory_app.services.cache import cache_canonical_json, cache_key
from tests.conftest import REPO_ROOT


def test_canonical_json_sorts_keys_and_drops_spaces():
    assert cache_canonical_json({"b": 1, "a": [1, 2], "c": {"z": None, "y": "文字"}}) == (
        '{"a":[1,2],"b":1,"c":{"y":"文字","z":null}}'
    )


def test_integral_floats_equal_ints_but_bools_do_not():
    assert cache_canonical_json({"n": 1.0}) == cache_canonical_json({"n": 1}) == '{"n":1}'
    assert cache_canonical_json(True) == "true"
    assert cache_canonical_json(True) != cache_canonical_json(1)
    assert cache_canonical_json(0.1) == '{"$float":"0.1"}'


def test_sets_are_sorted_and_tuples_are_lists():
    assert cache_canonical_json({"c", "a", "b"}) == '{"$set":["a","b","c"]}'
    assert cache_canonical_json(frozenset({3, 1, 2})) == '{"$set":[1,2,3]}'
    assert cache_canonical_json((1, "x")) == cache_canonical_json([1, "x"]) == '[1,"x"]'


def test_bytes_datetimes_decimals_and_uuids_are_tagged():
    assert cache_canonical_json(b"png") == f'{{"$bytes":"{hashlib.sha256(b"png").hexdigest()}"}}'
    in_tokyo = dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert cache_canonical_json(in_tokyo) == '{"$datetime":"2026-01-02T00:00:00+00:00"}'
    assert cache_canonical_json(dt.date(2026, 1, 2)) == '{"$date":"2026-01-02"}'
    assert cache_canonical_json(decimal.Decimal("1.10")) == '{"$decimal":"1.1"}'
    assert cache_canonical_json(decimal.Decimal("1.10")) != cache_canonical_json("1.1")
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert cache_canonical_json(value) == '{"$uuid":"12345678-1234-5678-1234-567812345678"}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "type object"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ({1: "a"}, "mapping keys must be strings"),
        (dt.datetime(2026, 1, 1), "naive datetime"),
        (decimal.Decimal("NaN"), "Decimal NaN"),
        ({"nested": [{"deep": {1, object()}}]}, "type object"),
    ],
)
def test_values_without_a_canonical_form_are_refused(value, message):
    with pytest.raises(TypeError, match=message):
        cache_canonical_json(value)
    with pytest.raises(ValidationFailed) as raised:
        cache_key(namespace="text_analysis", key=value)
    assert raised.value.details["fields"]["key"]


def test_cache_key_is_namespaced_sha256():
    expected_text = '{"key":{"prompt":"cat"},"namespace":"images"}'
    assert cache_key(namespace="images", key={"prompt": "cat"}) == hashlib.sha256(expected_text.encode()).hexdigest()
    assert cache_key(namespace="images", key={"prompt": "cat"}) != cache_key(
        namespace="api_responses", key={"prompt": "cat"}
    )


SAMPLE = (
    '{"tags": {"猫", "dog", "bird", "fish", "ant", "bee"}, "size": (1024, 768), "scale": 2.0, '
    '"seed": 0.30000000000000004, "when": dt.datetime(2026, 5, 1, tzinfo=dt.UTC), "raw": b"\\x00\\xff"}'
)


def test_the_same_key_in_other_processes_with_other_hash_seeds():
    # Set iteration order depends on PYTHONHASHSEED: the canonical form must not.
    here = cache_key(namespace="images", key=eval(SAMPLE))  # noqa: S307 - our own literal
    script = (
        "import datetime as dt; from memory_app.services.cache import cache_key; "
        f"print(cache_key(namespace='images', key={SAMPLE}))"
    )
    for seed in ("1", "2", "12345"):
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
            cwd=REPO_ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONHASHSEED": seed,
                "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.test",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout.strip() == here

"""The envelope renderer writes with orjson the bytes DRF's JSONRenderer wrote, for every kind of value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import ipaddress
import uuid
import zoneinfo

import pytest
from django.utils.functional import lazy
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from memory_app.api.envelope import EnvelopeJSONRenderer, _orjson_render

lazy_text = lazy(lambda: "lazy é", str)()


@dataclasses.dataclass
class Point:
    x: int


ODD_VALUES = [
    {"text": "plain", "number": 1, "negative": -7, "float": 0.1, "big": 2**63 - 1, "small": -(2**63)},
    {"unicode": "é ü 日本語 😀 \x00 \x1f \x7f \u00a0 \ufeff", "quote": '"\\/\b\f\n\r\t'},
    {"separators": "a\u2028b\u2029c", "key\u2028": 1},
    {"floats": [1.0, 1.5, -0.0, 123456.789, 0.000123, 3.141592653589793]},
    {"utc": dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.UTC)},
    {"micro": dt.datetime(2025, 1, 27, 10, 30, 0, 120000, tzinfo=dt.UTC)},
    {"offset": dt.datetime(2025, 1, 27, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))},
    {"zoned": dt.datetime(2025, 1, 27, 10, 30, tzinfo=zoneinfo.ZoneInfo("Europe/London"))},
    {"naive": dt.datetime(2025, 1, 27, 10, 30, 5, 7)},
    {"date": dt.date(2025, 1, 27), "time": dt.time(10, 30, 1, 5), "delta": dt.timedelta(days=1, seconds=3)},
    {"decimal": decimal.Decimal("12.50"), "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    {"lazy": gettext_lazy("Not found."), "lazy_text": lazy_text, "ip": ipaddress.ip_address("10.0.0.1")},
    {"nested": {"list": [1, [2, [3, {"a": None, "b": True, "c": False}]]], "tuple": (1, "two"), "empty": {}}},
    {"return": ReturnDict({"a": ReturnList([1, 2], serializer=None)}, serializer=None)},
    {"bytes": b"raw", "set_like": frozenset()},
    [],
    "a string",
    None,
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_orjson_writes_the_bytes_drf_wrote(value):
    envelope = {"success": True, "data": value, "metadata": {"request_id": "req-1", "processing_time_ms": 0.25}}

    assert _orjson_render(envelope) == JSONRenderer().render(envelope)


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, {1: "an integer key"}, {None: "a null key"}, _nested(300)],
    ids=["beyond-64-bits", "below-64-bits", "int-key", "none-key", "deep"],
)
def test_what_orjson_refuses_is_rendered_as_before(value):
    envelope = {"success": True, "data": value, "metadata": {}}
    assert _orjson_render(envelope) is None

    rendered = EnvelopeJSONRenderer().render(value)

    # The same data as DRF wrote it (the metadata is made at rendering time).
    assert rendered.split(b',"metadata":')[0] == JSONRenderer().render(envelope).split(b',"metadata":')[0]


@pytest.mark.parametrize("value", ["lone \ud800 surrogate", {"key \udfff": ["x\udc00y"]}])
def test_a_lone_surrogate_is_replaced_as_before(value):
    rendered = EnvelopeJSONRenderer().render(value)

    assert rendered.startswith(b'{"success":true,"data":')
    assert "\ufffd".encode() in rendered
    assert b"\\ud" not in rendered


def test_a_dataclass_is_refused_as_drf_refused_it():
    with pytest.raises(TypeError):
        JSONRenderer().render({"point": Point(1)})
    with pytest.raises(TypeError):
        EnvelopeJSONRenderer().render({"point": Point(1)})


def test_an_indented_answer_is_drfs_own():
    rendered = EnvelopeJSONRenderer().render({"a": 1}, "application/json; indent=2")

    assert rendered.startswith(b'{\n  "success": true')

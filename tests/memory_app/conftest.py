"""Fixtures of the SSRF guard's tests (``test_safe_fetch``, ``services/test_previous_context``; the image
provider's tests import ``public_loopback``)."""

from __future__ import annotations

import socket

import pytest

from memory_app import safe_fetch as guard


@pytest.fixture
def connects(monkeypatch) -> list[object]:
    attempts: list[object] = []
    original = socket.socket.connect

    def recording(self, address):
        attempts.append(address)
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return attempts


@pytest.fixture
def public_loopback(monkeypatch):
    """Pretend ``images.example`` is a public host that resolves to 127.0.0.1 (only that address is allowed),
    so the fetch path — pinning, Host header, redirects, limits — runs against a real local server."""
    real_resolve = guard._resolve

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "images.example" else real_resolve(host, port)

    monkeypatch.setattr(guard, "_resolve", resolve)
    real_allowed = guard.address_allowed
    monkeypatch.setattr(guard, "address_allowed", lambda address: address == "127.0.0.1" or real_allowed(address))

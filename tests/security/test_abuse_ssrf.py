"""SSRF through ``previous_context``: every loopback, private, link-local or odd-spelled target, every name that
resolves to one, every redirect to one and every other scheme is refused — and no connection is ever made.

Nothing here reaches past this machine: names are resolved by a fake resolver, a connection attempt to
anything but loopback is refused by the recorder itself, and the only servers are on 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

from memory_app import safe_fetch as guard
from memory_app.errors import PreviousContextRefused
from memory_app.models import HistoryRecord, WorkflowState, WorkflowUnit
from memory_app.services.previous_context import previous_context_resolve
from tests.support.http_servers import ImageServer, Listener, png_bytes
from tests.workflows.conftest import eager  # noqa: F401 - the fixture, used by name below

pytestmark = pytest.mark.django_db

REAL_GETADDRINFO = socket.getaddrinfo
# Names the fake resolver knows: anything else is "unresolvable" (no query ever leaves the machine).
NAMES: dict[str, list[str]] = {
    "intranet.example": ["10.20.30.40"],
    "corp.example": ["172.16.5.4"],
    "home.example": ["192.168.1.10"],
    "metadata.example": ["169.254.169.254"],
    "loop.example": ["127.0.0.1"],
    "v6-local.example": ["fd00::10"],
    "v6-mapped.example": ["::ffff:10.0.0.1"],
    # One public and one private address: the host is refused, never "the good one" picked.
    "mixed.example": ["93.184.216.34", "192.168.0.1"],
}


@pytest.fixture
def resolver(monkeypatch) -> list[str]:
    """``socket.getaddrinfo`` answers from NAMES for names and parses numeric hosts itself; returns the names
    it was asked about."""
    asked: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            # Numeric forms (127.1, 2130706433, 0x7f000001, ::1): the C library parses them without a query.
            return REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        asked.append(name)
        if name == "localhost":
            return REAL_GETADDRINFO("127.0.0.1", port, family, type, proto, socket.AI_NUMERICHOST)
        if name not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = []
        for address in NAMES[name]:
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port or 0, 0, 0) if kind == socket.AF_INET6 else (address, port or 0)
            answers.append((kind, socket.SOCK_STREAM, 6, "", sockaddr))
        return answers

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.fixture
def connects(monkeypatch) -> list[tuple]:
    """Every outgoing connection attempt, recorded; one to anything but loopback is refused outright."""
    attempts: list[tuple] = []
    original = socket.socket.connect

    def recording(self, address):
        attempts.append(address)
        host = address[0] if isinstance(address, tuple) else ""
        if not host or not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test: no connection beyond loopback ({address!r})")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return attempts


def counts() -> tuple[int, int, int]:
    return WorkflowState.objects.count(), WorkflowUnit.objects.count(), HistoryRecord.objects.count()


def start_comic(client, previous_context: str):
    body = {"workflow_type": "comic_generation", "project_id": "proj-001", "input": {"text": "小明走进村口。"}}
    body["input"]["previous_context"] = previous_context
    return client.post("/api/workflows/", body, format="json")


TARGETS = [
    ("http://127.0.0.1:{port}/a.png", "private_address"),
    ("http://127.1:{port}/a.png", "private_address"),
    ("http://2130706433:{port}/a.png", "private_address"),
    ("http://0x7f000001:{port}/a.png", "private_address"),
    ("http://0177.0.0.1:{port}/a.png", "private_address"),
    ("http://[::1]:{port}/a.png", "private_address"),
    ("http://[::ffff:127.0.0.1]:{port}/a.png", "private_address"),
    ("http://[::ffff:7f00:1]:{port}/a.png", "private_address"),
    ("http://localhost:{port}/a.png", "private_address"),
    ("HTTP://LOCALHOST:{port}/a.png", "private_address"),
    ("http://0.0.0.0:{port}/a.png", "private_address"),
    ("https://127.0.0.1:{port}/a.png", "private_address"),
    ("http://10.0.0.1/a.png", "private_address"),
    ("http://10.255.255.254:8080/a.png", "private_address"),
    ("http://172.16.0.1/a.png", "private_address"),
    ("http://172.31.255.254/a.png", "private_address"),
    ("http://192.168.0.1/a.png", "private_address"),
    ("http://169.254.169.254/latest/meta-data/", "private_address"),
    ("http://[fe80::1]/a.png", "private_address"),
    ("http://[fd00::1]/a.png", "private_address"),
    ("http://intranet.example/a.png", "private_address"),
    ("http://corp.example/a.png", "private_address"),
    ("http://home.example/a.png", "private_address"),
    ("http://metadata.example/latest/meta-data/", "private_address"),
    ("http://loop.example:{port}/a.png", "private_address"),
    ("http://v6-local.example/a.png", "private_address"),
    ("http://v6-mapped.example/a.png", "private_address"),
    ("http://mixed.example/a.png", "private_address"),
    ("http://no-such-host.invalid/a.png", "unresolvable"),
    ("http://user:pw@127.0.0.1:{port}/a.png", "credentials"),
    ("http://example.com@127.0.0.1:{port}/a.png", "credentials"),
    ("http://127.0.0.1:{port}\t/a.png", "malformed_url"),
    ("file:///etc/passwd", "scheme"),
    ("FILE:///etc/passwd", "scheme"),
    ("file://localhost/etc/passwd", "scheme"),
    ("gopher://127.0.0.1:{port}/_x", "scheme"),
    ("ftp://127.0.0.1:{port}/a.png", "scheme"),
    ("dict://127.0.0.1:{port}/info", "scheme"),
    ("ldap://127.0.0.1:{port}/", "scheme"),
    ("data:image/png;base64,iVBORw0KGgo=", "scheme"),
    ("jar:http://127.0.0.1:{port}/a.jar!/", "scheme"),
]


@pytest.mark.parametrize(("template", "reason"), TARGETS)
def test_a_private_or_odd_target_is_refused_by_the_api_with_no_connection(
    auth_client, project, media, resolver, connects, listener, django_capture_on_commit_callbacks, template, reason
):
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = start_comic(auth_client, template.format(port=listener.port))

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert (body["error"]["code"], body["error"]["details"]["reason"]) == ("PREVIOUS_CONTEXT_REFUSED", reason)
    assert (counts(), callbacks) == (before, [])
    assert connects == []
    assert listener.accepted == 0


@pytest.mark.parametrize(("template", "reason"), TARGETS)
def test_the_worker_stage_refuses_the_same_targets_with_no_connection(
    project, media, resolver, connects, listener, template, reason
):
    # previous_context_resolve runs in the worker, later than the API's check: DNS may have changed meanwhile.
    with pytest.raises(PreviousContextRefused) as refused:
        previous_context_resolve(project=project, value=template.format(port=listener.port))

    assert refused.value.details["reason"] == reason
    assert connects == []
    assert listener.accepted == 0


@pytest.fixture
def public_loopback(monkeypatch):
    """Treat 127.0.0.1 — and only it — as public and let ``images.example`` resolve to it, so the fetch path
    (pinning, redirects) runs against a real local server. Every other address keeps the real rule."""
    monkeypatch.setitem(NAMES, "images.example", ["127.0.0.1"])
    real_allowed = guard.address_allowed
    monkeypatch.setattr(guard, "address_allowed", lambda address: address == "127.0.0.1" or real_allowed(address))


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2:{listener}/a.png",
        "http://[::1]:{listener}/a.png",
        "http://10.0.0.7/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://intranet.example/a.png",
        "http://mixed.example/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.2:{listener}/_x",
    ],
)
def test_a_redirect_to_a_private_target_is_refused_before_connecting_to_it(
    project, media, resolver, public_loopback, connects, location
):
    loopback_two = Listener("127.0.0.2")
    server = ImageServer({"/start.png": (302, {"Location": location.format(listener=loopback_two.port)}, b"")})
    try:
        with pytest.raises(PreviousContextRefused) as refused:
            previous_context_resolve(project=project, value=f"http://images.example:{server.port}/start.png")
    finally:
        server.close()
        loopback_two.close()

    assert refused.value.details["reason"] in {"private_address", "scheme"}
    assert [path for path, _ in server.hits] == ["/start.png"]
    assert [address[:2] for address in connects] == [("127.0.0.1", server.port)]
    assert loopback_two.accepted == 0


@pytest.mark.usefixtures("eager")
def test_a_run_whose_image_redirects_to_a_private_address_fails_its_step_without_connecting(
    auth_client,
    project,
    media,
    manga_shonen,
    resolver,
    public_loopback,
    connects,
    django_capture_on_commit_callbacks,
):
    loopback_two = Listener("127.0.0.2")
    server = ImageServer({"/start.png": (302, {"Location": f"http://127.0.0.2:{loopback_two.port}/x.png"}, b"")})
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = start_comic(auth_client, f"http://images.example:{server.port}/start.png")
        assert response.status_code == 202, response.content
        run = auth_client.get(f"/api/workflows/{response.json()['data']['workflow_id']}").json()["data"]
    finally:
        server.close()
        loopback_two.close()

    assert run["status"] == "failed"
    assert run["error"]["type"] == "PreviousContextRefused"
    assert "127.0.0.2" in run["error"]["message"]
    assert loopback_two.accepted == 0
    assert all(address[0] == "127.0.0.1" for address in connects)


def test_the_vetted_address_is_pinned_so_a_rebinding_name_cannot_redirect_the_connection(
    project, media, monkeypatch, connects
):
    """The name answers 127.0.0.1 (allowed here) while it is vetted and 127.0.0.2 at any other moment: the
    connection must go to the vetted address, with no second look-up of the name."""
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png"}, png_bytes())})
    rebound = Listener("127.0.0.2", server.port)
    vetting = threading.local()
    lookups: list[tuple[str, bool]] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host == "rebind.example":
            inside = getattr(vetting, "active", False)
            lookups.append((host, inside))
            host = "127.0.0.1" if inside else "127.0.0.2"
        return REAL_GETADDRINFO(host, port, family, type, proto, flags)

    real_vet = guard._vet_url

    def vet(url: str, **options):
        vetting.active = True
        try:
            return real_vet(url, **options)
        finally:
            vetting.active = False

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(guard, "_vet_url", vet)
    real_allowed = guard.address_allowed
    monkeypatch.setattr(guard, "address_allowed", lambda address: address == "127.0.0.1" or real_allowed(address))
    try:
        resolved = previous_context_resolve(project=project, value=f"http://rebind.example:{server.port}/a.png")
    finally:
        server.close()
        rebound.close()

    assert resolved.image == png_bytes()
    assert [path for path, _ in server.hits] == ["/a.png"]
    assert rebound.accepted == 0
    assert lookups and all(inside for _, inside in lookups)
    assert {address[:2] for address in connects} == {("127.0.0.1", server.port)}

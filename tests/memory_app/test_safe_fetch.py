"""The SSRF guard (``memory_app.safe_fetch``): which addresses are public, and fetching through it.

Refused targets must be refused before any connection: a real listener on 127.0.0.1 counts the connections
it accepts (it must see none), and ``socket.socket.connect`` is wrapped to record every attempt anywhere.
``previous_context`` and the image provider are tested through it in their own modules.
"""

from __future__ import annotations

import pytest

from memory_app.errors import PreviousContextRefused, RetryableProviderError
from memory_app.safe_fetch import address_allowed, image_download, image_fetch, url_check
from tests.support.http_servers import ImageServer, png_bytes


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.8.8",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "::127.0.0.1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b::7f00:1",
        "not-an-ip",
    ],
)
def test_non_public_addresses_are_not_allowed(address):
    assert address_allowed(address) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(address) is True


def test_an_image_is_fetched_from_the_pinned_address_with_its_host_header_and_type(public_loopback):
    image = png_bytes()
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png; charset=binary"}, image)})
    try:
        fetched = image_fetch(f"http://images.example:{server.port}/a.png")
    finally:
        server.close()

    assert (fetched.data, fetched.content_type) == (image, "image/png")
    assert server.hits == [("/a.png", f"images.example:{server.port}")]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/a.png", "private_address"),
        ("http://user:pw@images.example/a.png", "credentials"),
        ("ftp://images.example/a.png", "scheme"),
        ("http://images.example/a b.png", "malformed_url"),
        ("http:///a.png", "no_host"),
    ],
)
def test_a_bad_url_is_refused_by_the_check_without_connecting(public_loopback, connects, url, reason):
    with pytest.raises(PreviousContextRefused) as refused:
        url_check(url)

    assert refused.value.details == {"previous_context": url, "reason": reason}
    assert connects == []


def test_the_caller_s_byte_limit_applies_instead_of_the_default(public_loopback, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"previous_context_max_bytes": 10})}
    )
    image = png_bytes()
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png"}, image)})
    url = f"http://images.example:{server.port}/a.png"
    try:
        downloaded = image_download(url=url, max_bytes=len(image))
        with pytest.raises(PreviousContextRefused) as refused:
            image_download(url=url, max_bytes=len(image) - 1)
    finally:
        server.close()

    assert downloaded == image
    assert refused.value.details["reason"] == "too_large"


def test_a_download_that_is_not_a_readable_image_is_refused(public_loopback):
    server = ImageServer({"/x.png": (200, {"Content-Type": "image/png"}, b"not really a png")})
    try:
        with pytest.raises(PreviousContextRefused) as refused:
            image_download(url=f"http://images.example:{server.port}/x.png")
    finally:
        server.close()

    assert refused.value.details["reason"] == "not_an_image"


def test_a_429_answer_is_retryable(public_loopback):
    server = ImageServer({"/x.png": (429, {}, b"")})
    try:
        with pytest.raises(RetryableProviderError):
            image_fetch(f"http://images.example:{server.port}/x.png")
    finally:
        server.close()


def test_a_post_to_loopback_is_refused_before_connecting_unless_allowed(listener, webhook_receiver):
    from memory_app.safe_fetch import guarded_post

    with pytest.raises(PreviousContextRefused) as refused:
        guarded_post(f"http://127.0.0.1:{listener.port}/hook", content=b"{}", headers={}, timeout_seconds=2)
    with pytest.raises(PreviousContextRefused):
        guarded_post("http://10.0.0.7/hook", content=b"{}", headers={}, timeout_seconds=2, allow_loopback=True)
    assert refused.value.details["reason"] == "private_address"
    assert listener.accepted == 0

    receiver = webhook_receiver([302])
    answer = guarded_post(
        receiver.url, content=b"{}", headers={"x-test": "1"}, timeout_seconds=2, allow_loopback=True, excerpt_bytes=5
    )

    assert (answer.status_code, answer.excerpt) == (302, '{"ok"')  # a redirect is an answer, never followed
    assert len(receiver.received) == 1
    assert receiver.received[0].headers["x-test"] == "1"


# --- an image provider's own hosts ---------------------------------------------------------------------------


def test_a_loopback_url_is_fetched_when_its_host_is_allowed():
    image = png_bytes()
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png"}, image)})
    try:
        fetched = image_download(url=f"http://127.0.0.1:{server.port}/a.png", allowed_hosts=frozenset({"127.0.0.1"}))
    finally:
        server.close()

    assert fetched == image
    assert server.hits == [("/a.png", f"127.0.0.1:{server.port}")]


def test_another_loopback_host_stays_refused_when_one_host_is_allowed(connects):
    with pytest.raises(PreviousContextRefused) as raised:
        image_fetch("http://127.0.0.2:8080/a.png", allowed_hosts=frozenset({"127.0.0.1"}))

    assert raised.value.details["reason"] == "private_address"
    assert connects == []


def test_a_redirect_from_an_allowed_host_to_another_private_host_is_refused(connects):
    server = ImageServer({"/a.png": (302, {"Location": "http://10.0.0.1/metadata.png"}, b"")})
    try:
        with pytest.raises(PreviousContextRefused) as raised:
            image_fetch(f"http://127.0.0.1:{server.port}/a.png", allowed_hosts=frozenset({"127.0.0.1"}))
    finally:
        server.close()

    assert raised.value.details["reason"] == "private_address"
    assert server.hits == [("/a.png", f"127.0.0.1:{server.port}")]

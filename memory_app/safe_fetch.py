"""Images fetched from http(s) URLs, guarded against server-side request forgery.

Used by ``previous_context`` (a URL that continues a story), by the image provider (an images API that
answers with a URL) and by webhook deliveries (``guarded_post``: the same vetting and pinning, loopback allowed
only when the caller says so). It sits below the services and the providers and imports neither.

- the host is resolved with ``getaddrinfo`` and EVERY address must be public (``ipaddress``: no loopback,
  private, link-local, multicast, reserved, unspecified, shared/CGNAT, IPv4-mapped/compatible, 6to4/Teredo
  wrapping, IPv6 unique-local or site-local); one bad address refuses the host (no "pick the good one");
- we connect to the vetted IP itself, never to the name again (no DNS rebinding between check and use),
  with the ``Host`` header and the TLS SNI/certificate name kept as the original host;
- an image provider's own hosts (``allowed_hosts``: its base URL's host and ``providers.image.allowed_hosts``)
  may resolve to private or loopback addresses: a self-hosted server on the LAN or on this machine answers with
  URLs on itself. Only those exact host names are trusted, every other host is vetted as above;
- redirects are followed by hand (``follow_redirects=False``), each hop vetted the same way, at most
  ``pipelines.previous_context_max_redirects``;
- a total deadline (``previous_context_timeout_seconds``) and a byte limit (``previous_context_max_bytes`` unless
  the caller gives one); only ``image/*`` (not SVG) responses.
A refused target is refused before any socket is opened. Refusals are ``PreviousContextRefused`` (the error
``previous_context`` answers with; the image provider turns them into a ``ProviderError``); timeouts, transport
errors, 429 and 5xx are ``RetryableProviderError``.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings

from memory_app.errors import PreviousContextRefused, RetryableProviderError

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}


def refused(message: str, value: str, reason: str) -> PreviousContextRefused:
    """The refusal of ``value`` (shortened in the details) for ``reason``, a stable word tests and clients read."""
    return PreviousContextRefused(message, details={"previous_context": value[:300], "reason": reason})


# --- addresses ---------------------------------------------------------------------------------------------


def address_allowed(address: str) -> bool:
    """True only for a globally routable unicast address that wraps no other address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address inside (and would reach it): refuse them outright.
        if ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None:
            return False
        if ip in ipaddress.ip_network("::/96") or ip in ipaddress.ip_network("64:ff9b::/96"):
            return False  # IPv4-compatible and NAT64 forms
        if ip.is_site_local:
            return False
    blocked = (
        ip.is_loopback,
        ip.is_private,
        ip.is_link_local,
        ip.is_multicast,
        ip.is_reserved,
        ip.is_unspecified,
    )
    return ip.is_global and not any(blocked)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refused(f"The host '{host}' cannot be resolved.", host, "unresolvable") from exc
    # The first item of a socket address is the IP as text, for IPv4 and IPv6 alike.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the vetted IP we will connect to
    path: str


def _vet_url(url: str, *, allow_loopback: bool = False, allowed_hosts: frozenset[str] = frozenset()) -> _Target:
    if any(ord(char) < 0x21 for char in url):
        raise refused("The URL contains whitespace or control characters.", url, "malformed_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise refused("Only http and https URLs are fetched.", url, "scheme")
    if parts.username or parts.password:
        raise refused("URLs with credentials are refused.", url, "credentials")
    host = parts.hostname
    if not host:
        raise refused("The URL has no host.", url, "no_host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refused("The URL's port is not valid.", url, "port") from None
    addresses = _resolve(host, port)
    trusted = host.lower().rstrip(".") in allowed_hosts
    refused_addresses = [
        address
        for address in addresses
        if not (trusted or address_allowed(address) or (allow_loopback and _is_loopback(address)))
    ]
    if not addresses or refused_addresses:
        raise refused(f"The host '{host}' resolves to an address that is not public.", url, "private_address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def url_check(url: str, *, allow_loopback: bool = False) -> None:
    """Refuse ``url`` (``PreviousContextRefused``) unless it is http(s), without credentials, and its host
    resolves to public addresses only (or loopback ones, with ``allow_loopback``). Opens no connection."""
    _vet_url(url, allow_loopback=allow_loopback)


def _pinned_request(
    client: httpx.Client,
    target: _Target,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    address = f"[{target.address}]" if ":" in target.address else target.address
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    return client.build_request(
        method,
        f"{target.scheme}://{address}:{target.port}{target.path}",
        headers={"Host": host_header, **(headers or {"Accept": "image/*"})},
        content=content,
        # TLS: the SNI and the certificate check use the real host name, not the pinned IP.
        extensions={"sni_hostname": target.host},
    )


# --- fetching ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str  # as the server declared it: one of IMAGE_TYPES


def image_fetch(url: str, *, max_bytes: int | None = None, allowed_hosts: frozenset[str] = frozenset()) -> FetchedImage:
    """The body of an ``image/*`` answer from ``url``, through the guard, at most ``max_bytes``
    (``pipelines.previous_context_max_bytes`` by default). The bytes are not decoded: see ``image_format``.
    ``allowed_hosts`` (lower-case names) may resolve to private addresses; every hop of a redirect is vetted again
    against the same list."""
    config = settings.MEMORY.pipelines
    limit = int(config.previous_context_max_bytes if max_bytes is None else max_bytes)
    deadline = time.monotonic() + config.previous_context_timeout_seconds
    timeout = httpx.Timeout(config.previous_context_timeout_seconds)
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(config.previous_context_max_redirects + 1):
            target = _vet_url(current, allowed_hosts=allowed_hosts)
            try:
                response = client.send(_pinned_request(client, target), stream=True)
            except httpx.TimeoutException as exc:
                raise RetryableProviderError(f"previous_context download timed out: {exc}") from exc
            except httpx.TransportError as exc:
                raise RetryableProviderError(f"previous_context download failed: {exc}") from exc
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    current = urljoin(current, location)
                    continue
                if response.status_code >= 500 or response.status_code == 429:
                    raise RetryableProviderError(f"previous_context download: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise refused(f"The URL answered HTTP {response.status_code}.", url, "http_status")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type not in IMAGE_TYPES:
                    raise refused(f"The URL is not an image ({content_type or 'no type'}).", url, "content_type")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise refused("The image is over the size limit.", url, "too_large")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise refused("The image is over the size limit.", url, "too_large")
                    if time.monotonic() > deadline:
                        raise refused("The download took too long.", url, "too_slow")
            finally:
                response.close()
            return FetchedImage(data=bytes(body), content_type=content_type)
    raise refused("Too many redirects.", url, "redirects")


def image_format(data: bytes, *, source: str) -> str:
    """The format of an image Pillow can read (``png``, ``jpeg`` …); a refusal (``not_an_image``) otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return (image.format or "").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise refused("The previous_context is not a readable image.", source, "not_an_image") from None


def image_download(*, url: str, max_bytes: int | None = None, allowed_hosts: frozenset[str] = frozenset()) -> bytes:
    """An image's bytes from an http(s) URL through the guard (an image provider's ``url`` answer), at most
    ``max_bytes`` (``previous_context_max_bytes`` by default), refused unless Pillow can read them. The provider's
    ``allowed_hosts`` may be private (see the module docstring)."""
    fetched = image_fetch(url, max_bytes=max_bytes, allowed_hosts=allowed_hosts)
    image_format(fetched.data, source=url)
    return fetched.data


# --- posting -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostAnswer:
    status_code: int
    excerpt: str  # the start of the answer's body, decoded leniently


def guarded_post(
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    allow_loopback: bool = False,
    excerpt_bytes: int = 500,
) -> PostAnswer:
    """POST ``content`` to ``url`` through the same guard (webhook deliveries): the host vetted, the vetted IP
    connected to, no redirect followed (a redirect is an answer like any other), the whole exchange within
    ``timeout_seconds``, at most ``excerpt_bytes`` of the answer read. Refusals are ``PreviousContextRefused``;
    a timeout or a transport error is ``RetryableProviderError``."""
    target = _vet_url(url, allow_loopback=allow_loopback)
    deadline = time.monotonic() + timeout_seconds
    with httpx.Client(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, trust_env=False) as client:
        request = _pinned_request(client, target, method="POST", headers=headers, content=content)
        try:
            response = client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise RetryableProviderError(f"timed out after {timeout_seconds:g} s") from exc
        except httpx.TransportError as exc:
            raise RetryableProviderError(f"transport error: {exc}") from exc
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) >= excerpt_bytes or time.monotonic() > deadline:
                    break
        except httpx.TimeoutException as exc:
            raise RetryableProviderError(f"timed out after {timeout_seconds:g} s reading the answer") from exc
        except httpx.TransportError as exc:
            raise RetryableProviderError(f"transport error reading the answer: {exc}") from exc
        finally:
            response.close()
    return PostAnswer(status_code=response.status_code, excerpt=bytes(body[:excerpt_bytes]).decode("utf-8", "replace"))

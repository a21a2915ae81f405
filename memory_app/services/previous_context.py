"""``previous_context`` (seed §6.1): a project path, an http(s) image URL, or text that enhances the prompt.

Two stages. ``previous_context_check`` runs when a run starts (a bad value is a 400 and nothing is enqueued):
it classifies the value, confines a project path to that project's storage, and resolves a URL's host and
vets every address. ``previous_context_resolve`` runs in the worker and fetches the bytes.

The URL fetch is guarded against server-side request forgery:
- the host is resolved with ``getaddrinfo`` and EVERY address must be public (``ipaddress``: no loopback,
  private, link-local, multicast, reserved, unspecified, shared/CGNAT, IPv4-mapped/compatible, 6to4/Teredo
  wrapping, IPv6 unique-local or site-local); one bad address refuses the host (no "pick the good one");
- we connect to the vetted IP itself, never to the name again (no DNS rebinding between check and use),
  with the ``Host`` header and the TLS SNI/certificate name kept as the original host;
- redirects are followed by hand (``follow_redirects=False``), each hop vetted the same way, at most
  ``previous_context_max_redirects``;
- a total deadline and a byte limit; only ``image/*`` (not SVG) responses whose bytes Pillow can identify.
A refused target is refused before any socket is opened.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from django.conf import settings
from django.core.files.storage import default_storage

from memory_app.errors import PreviousContextRefused, RetryableProviderError
from memory_app.models import Project

MAX_TEXT_CHARS = 2000
ContextKind = Literal["none", "text", "project_image", "url_image"]
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}


@dataclass(frozen=True)
class CheckedContext:
    kind: ContextKind
    value: str
    storage_name: str | None = None  # project_image: the storage name inside projects/<id>/


@dataclass(frozen=True)
class ResolvedContext:
    kind: ContextKind
    text: str  # what enhances the prompt
    image: bytes | None = None
    content_type: str | None = None
    sha256: str | None = None
    source: str = ""


def _refuse(message: str, value: str, reason: str) -> PreviousContextRefused:
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
        raise _refuse(f"The host '{host}' cannot be resolved.", host, "unresolvable") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the vetted IP we will connect to
    path: str


def _vet_url(url: str) -> _Target:
    if any(ord(char) < 0x21 for char in url):
        raise _refuse("The URL contains whitespace or control characters.", url, "malformed_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("Only http and https URLs are fetched.", url, "scheme")
    if parts.username or parts.password:
        raise _refuse("URLs with credentials are refused.", url, "credentials")
    host = parts.hostname
    if not host:
        raise _refuse("The URL has no host.", url, "no_host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refuse("The URL's port is not valid.", url, "port") from None
    addresses = _resolve(host, port)
    refused = [address for address in addresses if not address_allowed(address)]
    if not addresses or refused:
        raise _refuse(f"The host '{host}' resolves to an address that is not public.", url, "private_address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)


def _pinned_request(client: httpx.Client, target: _Target) -> httpx.Request:
    address = f"[{target.address}]" if ":" in target.address else target.address
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    return client.build_request(
        "GET",
        f"{target.scheme}://{address}:{target.port}{target.path}",
        headers={"Host": host_header, "Accept": "image/*"},
        # TLS: the SNI and the certificate check use the real host name, not the pinned IP.
        extensions={"sni_hostname": target.host},
    )


def _fetch_url(url: str, *, max_bytes: int | None = None) -> ResolvedContext:
    config = settings.MEMORY.pipelines
    limit = int(config.previous_context_max_bytes if max_bytes is None else max_bytes)
    deadline = time.monotonic() + config.previous_context_timeout_seconds
    timeout = httpx.Timeout(config.previous_context_timeout_seconds)
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(config.previous_context_max_redirects + 1):
            target = _vet_url(current)
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
                    raise _refuse(f"The URL answered HTTP {response.status_code}.", url, "http_status")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type not in _IMAGE_TYPES:
                    raise _refuse(f"The URL is not an image ({content_type or 'no type'}).", url, "content_type")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise _refuse("The image is over the size limit.", url, "too_large")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise _refuse("The image is over the size limit.", url, "too_large")
                    if time.monotonic() > deadline:
                        raise _refuse("The download took too long.", url, "too_slow")
            finally:
                response.close()
            return _image_context("url_image", bytes(body), content_type, url)
    raise _refuse("Too many redirects.", url, "redirects")


def _image_context(kind: ContextKind, data: bytes, content_type: str | None, source: str) -> ResolvedContext:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            fmt = (image.format or "").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise _refuse("The previous_context is not a readable image.", source, "not_an_image") from None
    digest = hashlib.sha256(data).hexdigest()
    return ResolvedContext(
        kind=kind,
        text=f"continuing from the previous image ({fmt}, {digest[:12]})",
        image=data,
        content_type=content_type or f"image/{fmt}",
        sha256=digest,
        source=source,
    )


# --- project paths -----------------------------------------------------------------------------------------


def _check_project_path(project: Project, value: str) -> CheckedContext:
    if "\x00" in value or "\\" in value or "%" in value or unquote(value) != value:
        raise _refuse("Encoded, NUL or backslash characters are refused in a project path.", value, "path_form")
    relative = value.lstrip("/")
    parts = PurePosixPath(relative).parts
    if len(parts) < 3 or parts[0] != "projects" or parts[1] != project.pk:
        raise _refuse(f"A project path must be inside /projects/{project.pk}/.", value, "outside_project")
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise _refuse("'.' and '..' are refused in a project path.", value, "path_traversal")
    name = "/".join(parts)
    try:
        root = Path(default_storage.path(f"projects/{project.pk}")).resolve()
        resolved = Path(default_storage.path(name)).resolve()
    except NotImplementedError:
        # A remote storage has no symlinks to follow: the name checks above are the confinement.
        root = resolved = None
    if root is not None and resolved is not None:
        if resolved != root and root not in resolved.parents:
            raise _refuse("The path leaves the project's storage.", value, "outside_project")
        if not resolved.is_file():
            raise _refuse("No such file in the project.", value, "missing")
    elif not default_storage.exists(name):
        raise _refuse("No such file in the project.", value, "missing")
    return CheckedContext(kind="project_image", value=value, storage_name=name)


# --- the two stages ----------------------------------------------------------------------------------------


def previous_context_check(*, project: Project, value: object) -> CheckedContext:
    """Classify and vet ``value`` without downloading anything; raise ``PreviousContextRefused`` if unusable."""
    if value is None or value == "":
        return CheckedContext(kind="none", value="")
    if not isinstance(value, str):
        raise _refuse("previous_context must be a string.", repr(value), "type")
    stripped = value.strip()
    lowered = stripped.lower()
    if lowered.startswith(("http://", "https://")):
        _vet_url(stripped)
        return CheckedContext(kind="url_image", value=stripped)
    if stripped.startswith(("/projects/", "projects/")):
        return _check_project_path(project, stripped)
    if "://" in lowered.split(" ", 1)[0] or lowered.startswith(("file:", "data:", "ftp:", "gopher:")):
        raise _refuse("Only http and https URLs are fetched.", stripped, "scheme")
    if len(stripped) > MAX_TEXT_CHARS:
        raise _refuse(f"A text previous_context is at most {MAX_TEXT_CHARS} characters.", stripped, "too_long")
    return CheckedContext(kind="text", value=stripped)


def previous_context_resolve(*, project: Project, value: object) -> ResolvedContext:
    """Check again (DNS may have changed, files may have moved) and fetch: text, image bytes, or nothing."""
    checked = previous_context_check(project=project, value=value)
    if checked.kind == "none":
        return ResolvedContext(kind="none", text="")
    if checked.kind == "text":
        return ResolvedContext(kind="text", text=checked.value, source="text")
    if checked.kind == "url_image":
        return _fetch_url(checked.value)
    assert checked.storage_name is not None
    limit = int(settings.MEMORY.pipelines.previous_context_max_bytes)
    with default_storage.open(checked.storage_name, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _refuse("The image is over the size limit.", checked.value, "too_large")
    extension = os.path.splitext(checked.storage_name)[1].lower().lstrip(".")
    content_type = {"jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(extension, f"image/{extension or 'png'}")
    return _image_context("project_image", data, content_type, checked.value)


def image_download(*, url: str, max_bytes: int | None = None) -> bytes:
    """An image's bytes from an http(s) URL through the same guard (an image provider's ``url`` answer), at most
    ``max_bytes`` (``previous_context_max_bytes`` by default)."""
    fetched = _fetch_url(url, max_bytes=max_bytes)
    assert fetched.image is not None
    return fetched.image

"""``previous_context`` (seed §6.1): a project path, an http(s) image URL, or text that enhances the prompt.

Two stages. ``previous_context_check`` runs when a run starts (a bad value is a 400 and nothing is enqueued):
it classifies the value, confines a project path to that project's storage, and resolves a URL's host and
vets every address. ``previous_context_resolve`` runs in the worker and fetches the bytes.

A URL is fetched through ``memory_app.safe_fetch``, the SSRF guard (public addresses only, the vetted address
pinned, redirects vetted hop by hop, a deadline and a byte limit, ``image/*`` only); the bytes must be an image
Pillow can read. A refused target is refused before any socket is opened.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote

from django.conf import settings
from django.core.files.storage import default_storage

from memory_app.models import Project
from memory_app.safe_fetch import image_fetch, image_format, url_check
from memory_app.safe_fetch import refused as _refuse

MAX_TEXT_CHARS = 2000
ContextKind = Literal["none", "text", "project_image", "url_image"]


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


def _fetch_url(url: str) -> ResolvedContext:
    fetched = image_fetch(url)
    return _image_context("url_image", fetched.data, fetched.content_type, url)


def _image_context(kind: ContextKind, data: bytes, content_type: str | None, source: str) -> ResolvedContext:
    fmt = image_format(data, source=source)
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
    # The project is the caller's own (resolved through its owner), named by the id its owner knows (what
    # answers show) or by its internal key (the storage name itself); either way the file is read from that
    # project's folder only, so another owner's project of the same id is never reached.
    if len(parts) < 3 or parts[0] != "projects" or parts[1] not in (project.public_id, project.pk):
        raise _refuse(f"A project path must be inside /projects/{project.public_id}/.", value, "outside_project")
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise _refuse("'.' and '..' are refused in a project path.", value, "path_traversal")
    name = "/".join(("projects", project.pk, *parts[2:]))
    root: Path | None
    resolved: Path | None
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
        url_check(stripped)
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

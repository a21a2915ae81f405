"""Staff-only image responses: the stored picture, or a placeholder image that says it is missing or damaged."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.utils.html import escape

from memory_app.selectors.blob_images import BlobImage, blob_image_read

PLACEHOLDER_WIDTH = 320
PLACEHOLDER_HEIGHT = 200


def placeholder_svg(*, problem: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLACEHOLDER_WIDTH}" height="{PLACEHOLDER_HEIGHT}" '
        f'viewBox="0 0 {PLACEHOLDER_WIDTH} {PLACEHOLDER_HEIGHT}">'
        f'<rect x="1" y="1" width="{PLACEHOLDER_WIDTH - 2}" height="{PLACEHOLDER_HEIGHT - 2}" fill="#f6f6f6" '
        'stroke="#ba2121" stroke-width="2" stroke-dasharray="8 4"/>'
        f'<text x="50%" y="45%" text-anchor="middle" font-family="sans-serif" font-size="20" fill="#ba2121">'
        f"File {escape(problem)}</text>"
        f'<text x="50%" y="62%" text-anchor="middle" font-family="sans-serif" font-size="13" fill="#333">'
        f"{escape(label)}</text></svg>"
    )


def stored_image_response(*, name: str, label: str, sha256: str | None = None) -> HttpResponse:
    """The image ``name`` of the default storage, checked; when it is missing or damaged, a placeholder picture
    saying so (status 404 or 422: the ``<img>`` still shows it) instead of a broken image or a server error."""
    image: BlobImage = blob_image_read(
        name=name, sha256=sha256, max_bytes=settings.MEMORY.cache_options.admin_preview_max_bytes * 8
    )
    if image.data is None:
        response = HttpResponse(
            placeholder_svg(problem=image.problem, label=label),
            content_type="image/svg+xml",
            status=404 if image.problem == "missing" else 422,
        )
        response["X-Image-Problem"] = image.problem
    else:
        response = HttpResponse(image.data, content_type=image.content_type)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response

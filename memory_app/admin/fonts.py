"""The panels' lettering font (Noto Sans CJK, a Python package) served to the admin's pages, so staff on a
machine without a Chinese font read names and captions instead of empty boxes. The pages ask for it last, after
the usual system CJK fonts by name (``comicmem_site/templates/admin/base_site.html``), and only for CJK
characters, so a browser that has one of those never downloads it."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404, HttpRequest

from memory_app.providers.fonts import lettering_font_path

# A year: the file changes only with the package (or pipelines.font_path) and a restart.
FONT_MAX_AGE = 365 * 24 * 3600


@staff_member_required
def lettering_font_view(request: HttpRequest) -> FileResponse:
    path = lettering_font_path()
    if path is None:
        raise Http404("No lettering font is installed.")
    response = FileResponse(path.open("rb"), content_type="font/otf" if path.suffix == ".otf" else "font/ttf")
    response["Cache-Control"] = f"private, max-age={FONT_MAX_AGE}"
    return response

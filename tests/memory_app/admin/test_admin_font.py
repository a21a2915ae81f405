"""The admin's pages read Chinese on a machine without a CJK font: every page declares the packaged lettering font
after the usual system CJK fonts, for CJK characters only, and the font is served to staff alone."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from memory_app.providers.fonts import lettering_font_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_browser(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def test_every_admin_page_declares_the_cjk_font_after_the_system_ones(staff_browser):
    page = staff_browser.get("/admin/").content.decode()
    url = reverse("admin-lettering-font")
    assert "@font-face" in page and f'url("{url}")' in page
    # Tried by name first: a browser that has one of them never downloads the file.
    assert page.index('local("Noto Sans CJK SC")') < page.index(f'url("{url}")')
    assert "unicode-range: U+2E80" in page
    assert '"comicmem CJK"' in page.split("--font-family-primary:")[1].split(";")[0]
    assert '"comicmem CJK"' in page.split("--font-family-monospace:")[1].split(";")[0]


def test_the_font_is_served_to_staff_with_a_long_cache_and_refused_to_others(staff_browser, client):
    answer = staff_browser.get(reverse("admin-lettering-font"))
    assert answer.status_code == 200
    assert answer["Content-Type"] == "font/otf"
    assert "max-age=31536000" in answer["Cache-Control"]
    body = b"".join(answer.streaming_content)
    path = lettering_font_path()
    assert path is not None and body == path.read_bytes()
    assert body[:4] == b"OTTO"  # an OpenType font with CFF outlines, as Noto Sans CJK ships

    anonymous = client.get(reverse("admin-lettering-font"))
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]

"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the admin's pages: the fixture and the
staff login. Tests import the fixture by name."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import service_unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        service_unavailable(f"{CHROMIUM} is missing (make sysdeps installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def staff_login(page: Any, base_url: str, next_path: str, *, username: str = "staffer") -> None:
    """Log in through the admin's own form (the password every factory user has) and land on ``next_path``."""
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", "pass-word-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")

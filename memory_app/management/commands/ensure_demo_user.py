"""manage.py ensure_demo_user: a staff user for the embedded mode, made once; prints how to log in."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from memory_app.services.users import user_create

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Create the staff user 'demo' if no staff user exists, and print how to log in."

    def handle(self, *args: Any, **options: Any) -> None:
        credentials = Path(settings.VAR_DIR) / "demo-login.txt"
        port = os.environ.get("PORT", "8000")
        if not get_user_model().objects.filter(is_staff=True).exists():
            password = secrets.token_urlsafe(9)
            _, token = user_create(username=DEMO_USERNAME, password=password, is_staff=True)
            get_user_model().objects.filter(username=DEMO_USERNAME).update(is_superuser=True)
            credentials.write_text(
                f"username: {DEMO_USERNAME}\npassword: {password}\ntoken:    {token.key}\n", encoding="utf-8"
            )
            credentials.chmod(0o600)
            self.stdout.write(self.style.SUCCESS(f"Created the staff user '{DEMO_USERNAME}'."))
        if credentials.exists():
            self.stdout.write(
                f"Log in at http://127.0.0.1:{port}/admin/ with:\n{credentials.read_text(encoding='utf-8')}"
            )
            self.stdout.write(f"(kept in {credentials})")
        else:
            self.stdout.write(f"Log in at http://127.0.0.1:{port}/admin/ with your staff account.")

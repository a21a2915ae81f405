"""manage.py create_api_user NAME [--password P] [--staff]: a user and its API token."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import Conflict
from memory_app.services.users import user_create


class Command(BaseCommand):
    help = "Create an API user and print its token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", help="Defaults to a random one, printed once.")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="Staff see every owner's objects and the admin.")

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or secrets.token_urlsafe(12)
        try:
            user, token = user_create(
                username=options["username"], password=password, email=options["email"], is_staff=options["staff"]
            )
        except Conflict as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"user:     {user.get_username()}{' (staff)' if options['staff'] else ''}")
        if not options["password"]:
            self.stdout.write(f"password: {password}")
        self.stdout.write(f"token:    {token.key}")
        self.stdout.write(f'use:      curl -H "Authorization: Token {token.key}" http://127.0.0.1:8000/api/projects/')

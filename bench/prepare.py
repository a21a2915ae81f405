"""Migrate the database named by DATABASE_URL and create the HTTP benchmark's user, token and contexts.

Run as ``python -m bench.prepare CONTEXTS`` by the benchmark; prints ``{"token": ..., "contexts": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys


def main(contexts: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from memory_app.models import ConversationContext
    from memory_app.services.conversation import context_create

    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username="bench-http")
    token, _ = Token.objects.get_or_create(user=user)
    # Fresh contexts every run, so each starts empty and fills its window during the run.
    ConversationContext.objects.filter(owner=user).delete()
    ids = [str(context_create(owner=user).pk) for _ in range(contexts)]
    print(json.dumps({"token": token.key, "contexts": ids}))


if __name__ == "__main__":
    main(int(sys.argv[1]))

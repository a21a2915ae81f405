"""Django system checks of the configuration that pydantic cannot judge field by field (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from memory_app.providers.settings_check import provider_settings_problems


@register(Tags.compatibility, deploy=False)
def provider_settings_checked(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The chat, image and embeddings endpoints' settings (``memory_app.providers.settings_check``)."""
    messages: list[CheckMessage] = []
    # One id per level (the provider settings); ``obj`` names the setting.
    for problem in provider_settings_problems(settings.MEMORY):
        if problem.level == "error":
            messages.append(Error(problem.message, obj=problem.setting, id="comicmem.E001"))
        else:
            messages.append(Warning(problem.message, obj=problem.setting, id="comicmem.W001"))
    return messages

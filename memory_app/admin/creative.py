"""Admin for creative memory: the character page (pictures, versions, revert, locks) and the style page (panels
drawn in it, satisfaction over time)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse

from memory_app.admin.charts import Series, line_chart
from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.admin.images import stored_image_response
from memory_app.errors import ComicmemError
from memory_app.models import Character, CharacterReference, StyleTemplate, StyleUsage
from memory_app.selectors.characters import character_reference_list
from memory_app.selectors.creative_page import (
    character_appearances,
    character_versions_page,
    style_examples,
    style_scores,
)
from memory_app.services.characters import character_revert

VERSIONS_SHOWN = 50


@admin.register(Character)
class CharacterAdmin(ModelAdmin[Character]):
    """The character page: its fields, its reference images and the panels it appears in as thumbnails, its
    versions with what each changed and a revert, its locked features."""

    list_display = ["name", "project", "mentions", "last_updated"]
    list_filter = ["project"]
    search_fields = ["name", "aliases", "project__public_id", "project__owner__username"]
    readonly_fields = ["created_at", "last_updated", "locked_fields"]
    change_form_template = "admin/memory_app/character_page.html"

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:character_id>/reference/<int:reference_id>",
                self.admin_site.admin_view(self.reference_view),
                name="memory_app_character_reference",
            ),
            path(
                "<int:character_id>/revert/",
                self.admin_site.admin_view(self.revert_view),
                name="memory_app_character_revert",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        character = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if character is not None:
            context.update(
                references=list(character_reference_list(character=character)),
                appearances=character_appearances(character=character),
                versions=character_versions_page(character=character, limit=VERSIONS_SHOWN),
                version_count=character.versions.count(),
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def reference_view(self, request: HttpRequest, character_id: int, reference_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        reference = get_object_or_404(CharacterReference, pk=reference_id, character_id=character_id)
        return stored_image_response(
            name=reference.storage_name, label=f"reference {reference.pk}", sha256=reference.sha256
        )

    def revert_view(self, request: HttpRequest, character_id: int) -> HttpResponse:
        """A new version equal to the posted one (``character_revert``), then back to the character page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        character = get_object_or_404(Character, pk=character_id)
        change_url = reverse("admin:memory_app_character_change", args=[character.pk])
        form = RevertForm(request.POST)
        if not form.is_valid():
            self.message_user(request, f"Not a version: {form.errors.as_text()}", messages.ERROR)
            return HttpResponseRedirect(change_url)
        version = form.cleaned_data["version"]
        try:
            character_revert(user=_staff_user(request), character=character, version=version)
        except ComicmemError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(change_url)
        self.message_user(request, f"{character.name} is back to version {version} (as a new version).")
        return HttpResponseRedirect(change_url)


class RevertForm(forms.Form):
    version = forms.IntegerField(min_value=1)


def _staff_user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


class StyleUsageInline(TabularInline[StyleUsage, StyleTemplate]):
    model = StyleUsage
    extra = 0
    fields = ["project", "user", "workflow_id", "used_at", "satisfaction_score", "rated_at"]
    readonly_fields = ["used_at", "rated_at"]
    raw_id_fields = ["project", "user"]


@admin.register(StyleTemplate)
class StyleTemplateAdmin(ModelAdmin[StyleTemplate]):
    """The style page: its fields, panels drawn in it, and its satisfaction scores over time."""

    list_display = ["public_id", "owner", "name", "updated_at"]
    search_fields = ["public_id", "name", "owner__username"]
    readonly_fields = ["template_id", "created_at", "updated_at"]
    inlines = [StyleUsageInline]
    change_form_template = "admin/memory_app/style_page.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        style = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if style is not None:
            context.update(
                examples=style_examples(style=style),
                scores_chart=line_chart(
                    [Series(name="satisfaction", points=style_scores(style=style))], height=160, y_max=5.0
                ),
            )
        return super().change_view(request, object_id, form_url, extra_context=context)


@admin.register(StyleUsage)
class StyleUsageAdmin(ModelAdmin[StyleUsage]):
    list_display = ["style", "project", "user", "used_at", "satisfaction_score"]
    list_filter = ["style"]
    readonly_fields = ["used_at"]
    raw_id_fields = ["project", "user"]

"""Creative memory (seed §6): the characters of a project and the style templates panels are drawn in."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from memory_app.models.project import new_internal_key

# A template id becomes part of prompts and cache keys; keep it a plain slug.
STYLE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class Character(models.Model):
    """One named character of a project, as the pipelines designed it (§6.1 ``character_memory``).

    ``consistent_features`` names the appearance features that must never change between panels; ``colors``
    are the remembered drawing colours (hair, clothing, skin) the renderer uses for this character everywhere.
    ``aliases`` are other names of the same person (a merged record's name among them): a run that finds one
    of them draws this character. ``locked_fields`` are the paths a person set (``appearance_features.hair``,
    ``colors.hair``, ``personality_traits``…): automatic design never changes them. Reference images are
    ``CharacterReference`` rows.
    """

    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="characters")
    name = models.CharField(max_length=100)
    # Other names the stories give this character (小雨 for 林小雨, 周伯 for 老周).
    aliases = models.JSONField(default=list, blank=True)
    appearance_features = models.JSONField(default=dict, blank=True)
    consistent_features = models.JSONField(default=list, blank=True)
    personality_traits = models.JSONField(default=list, blank=True)
    colors = models.JSONField(default=dict, blank=True)
    locked_fields = models.JSONField(default=list, blank=True)
    mentions = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="character_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.project_id})"


class ChangeSource(models.TextChoices):
    PERSON = "person"
    RUN = "run"


class CharacterVersion(models.Model):
    """One change of a character: who (a person, or a run), when, what (``changes``: field → before/after), and
    the editable state after it (``snapshot``), which a revert copies into a new version."""

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    action = models.CharField(max_length=32)
    source = models.CharField(max_length=16, choices=ChangeSource.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    workflow_id = models.UUIDField(null=True, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    snapshot = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["character_id", "version"]
        constraints = [models.UniqueConstraint(fields=["character", "version"], name="character_version_unique_number")]

    def __str__(self) -> str:
        return f"{self.character_id} v{self.version} ({self.action}, {self.source})"


class CharacterReference(models.Model):
    """A reference image of a character: a file in Django storage under a content-addressed name
    (``references/<sha256>.<ext>``; two characters with the same picture share the file)."""

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="references")
    storage_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=32)
    size_bytes = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    # The most common colours of the picture (#RRGGBB, most common first): what a renderer without references uses.
    dominant_colors = models.JSONField(default=list, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["character_id", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["character", "sha256"], name="character_reference_unique_content")
        ]

    def __str__(self) -> str:
        return f"{self.character_id}: {self.storage_name}"


class StyleTemplate(models.Model):
    """A style preset (§6.2): prompt, negative prompt, visual parameters. ``owner`` null = built in, for all.

    ``template_id`` is the internal key (foreign keys); ``public_id`` is the id the API shows and takes, unique
    per owner; a built-in's public id is taken for everyone (it is visible to all)."""

    template_id = models.CharField(primary_key=True, max_length=64, default=new_internal_key)
    public_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    prompt = models.TextField(blank=True, default="")
    negative_prompt = models.TextField(blank=True, default="")
    visual_parameters = models.JSONField(default=dict, blank=True)
    reference_examples = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="style_templates"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["public_id", "template_id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "public_id"], name="style_unique_public_id"),
            models.UniqueConstraint(
                fields=["public_id"], condition=models.Q(owner__isnull=True), name="style_unique_builtin_public_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.name})"


class StyleUsage(models.Model):
    """One use of a style in a project (a run), with the user's satisfaction score once rated."""

    style = models.ForeignKey(StyleTemplate, on_delete=models.CASCADE, related_name="usages")
    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="style_usages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="style_usages")
    workflow_id = models.UUIDField(null=True, blank=True)
    used_at = models.DateTimeField(auto_now_add=True)
    satisfaction_score = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(5.0)]
    )
    rated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-used_at", "-id"]
        indexes = [models.Index(fields=["style", "project", "-used_at"], name="style_usage_recent")]

    def __str__(self) -> str:
        return f"{self.style_id} in {self.project_id} at {self.used_at:%Y-%m-%d %H:%M}"

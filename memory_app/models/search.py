"""The recall index: one row per searchable object (a message, archived ones included; a history record; a
character; a run's story text), written in the same transaction as the object it indexes.

``tokens`` holds the text cut into words by jieba (``memory_app.search_text.index_tokens``), joined by spaces, so
that the database's own full-text machinery, which splits on spaces, finds Chinese words: SQLite FTS5 (a virtual
table kept in step by triggers, made by migration 0023 on SQLite only) and PostgreSQL full-text search (a stored
generated column ``search_vector`` = ``to_tsvector('simple', tokens)`` with a GIN index, migration 0024, on
PostgreSQL only; Django does not know the column, the search's SQL reads it). Each row points at
its object by a one-to-one key that cascades, so a hit never names a row that is gone.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class SearchKind(models.TextChoices):
    MESSAGE = "messages", "Message"
    HISTORY = "history", "History record"
    CHARACTER = "characters", "Character"
    STORY = "stories", "Story text"


# The object key each kind fills (exactly one per row).
SEARCH_KIND_FIELDS: dict[str, str] = {
    SearchKind.MESSAGE: "message",
    SearchKind.HISTORY: "history",
    SearchKind.CHARACTER: "character",
    SearchKind.STORY: "workflow",
}

# The SQLite FTS5 table over ``tokens`` (external content: it stores only the index, the text stays here).
SEARCH_FTS_TABLE = "memory_app_searchentry_fts"


class SearchEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=SearchKind.choices)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="+", null=True, blank=True)
    message = models.OneToOneField(
        "memory_app.ContextMessage", on_delete=models.CASCADE, related_name="search_entry", null=True, blank=True
    )
    history = models.OneToOneField(
        "memory_app.HistoryRecord", on_delete=models.CASCADE, related_name="search_entry", null=True, blank=True
    )
    character = models.OneToOneField(
        "memory_app.Character", on_delete=models.CASCADE, related_name="search_entry", null=True, blank=True
    )
    workflow = models.OneToOneField(
        "memory_app.WorkflowState", on_delete=models.CASCADE, related_name="search_entry", null=True, blank=True
    )
    text = models.TextField()  # what was indexed, as written: snippets are cut from it
    tokens = models.TextField()  # jieba words of ``text``, lower-cased, joined by single spaces
    text_hash = models.CharField(max_length=64)  # sha256 of ``text``: the key of its embedding
    created_at = models.DateTimeField()  # the object's own time

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "kind", "created_at"], name="search_owner_kind_time"),
            models.Index(fields=["project", "kind"], name="search_project_kind"),
            models.Index(fields=["text_hash"], name="search_text_hash"),
        ]
        constraints = [
            models.CheckConstraint(
                name="search_entry_one_object",
                condition=(
                    Q(
                        kind=SearchKind.MESSAGE,
                        message__isnull=False,
                        history__isnull=True,
                        character__isnull=True,
                        workflow__isnull=True,
                    )
                    | Q(
                        kind=SearchKind.HISTORY,
                        message__isnull=True,
                        history__isnull=False,
                        character__isnull=True,
                        workflow__isnull=True,
                    )
                    | Q(
                        kind=SearchKind.CHARACTER,
                        message__isnull=True,
                        history__isnull=True,
                        character__isnull=False,
                        workflow__isnull=True,
                    )
                    | Q(
                        kind=SearchKind.STORY,
                        message__isnull=True,
                        history__isnull=True,
                        character__isnull=True,
                        workflow__isnull=False,
                    )
                ),
            ),
        ]
        verbose_name_plural = "search entries"

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    @property
    def object_id(self) -> str:
        """The indexed object's id as the API names it (a message's or record's number, a run's UUID)."""
        return str(getattr(self, SEARCH_KIND_FIELDS[self.kind] + "_id"))


# On PostgreSQL with the pgvector extension, migration 0024 adds this ``vector`` column to ``SearchVector``'s
# table (outside the model: the type exists nowhere else) and ``<=>`` ranks by it.
SEARCH_VECTOR_COLUMN = "embedding"


class SearchVector(models.Model):
    """The embedding of one text by one model: the cache by input hash, so a text that several objects share (or
    that an edit left unchanged) is embedded once. Index rows find theirs by ``text_hash``.

    ``vector`` is the unit-length vector as little-endian float32 bytes (what sqlite-vec reads as it is, and what
    numpy maps without a copy); ``model`` is the endpoint's model key (the model, and the size asked of it).
    """

    id = models.BigAutoField(primary_key=True)
    model = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64)
    dimensions = models.PositiveIntegerField()
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "text_hash"], name="search_vector_model_text"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.text_hash[:12]} ({self.dimensions})"

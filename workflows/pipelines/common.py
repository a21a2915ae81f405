"""What both pipelines share: input checks at start, the run's owner and project, storage of outputs."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from memory_app.blob_storage import DEFAULT_STORAGE, blob_storage_is_local
from memory_app.errors import InputTooLarge, ValidationFailed
from memory_app.selectors.storage import workflow_output_folder
from workflows.engine import StepContext

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from memory_app.models import Project


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details={"fields": {field: [message]}})


def input_text(data: dict[str, Any]) -> str:
    """The run's text: a non-empty string within ``pipelines.max_input_chars``."""
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _field_error("input.text", "The text to process is required and must not be empty.")
    limit = settings.MEMORY.pipelines.max_input_chars
    if len(text) > limit:
        raise InputTooLarge(
            f"The text has {len(text)} characters; at most {limit} are accepted.",
            details={"fields": {"input.text": [f"At most {limit} characters."]}, "limit": limit, "size": len(text)},
        )
    return text.strip()


def ratio_preference(preferences: dict[str, Any]) -> float:
    value = preferences.get("target_ratio", settings.MEMORY.pipelines.default_target_ratio)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) < 1:
        raise _field_error("preferences.target_ratio", "target_ratio is a number between 0 and 1 (exclusive).")
    return float(value)


def int_preference(preferences: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = preferences.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _field_error(f"preferences.{name}", f"{name} is a whole number from {low} to {high}.")
    return value


def bool_preference(preferences: dict[str, Any], name: str, default: bool) -> bool:
    value = preferences.get(name, default)
    if not isinstance(value, bool):
        raise _field_error(f"preferences.{name}", f"{name} is true or false.")
    return value


def text_seed(text: str) -> int:
    """The default seed of a text: stable, so the same text re-renders the same panels (and hits the cache).

    Kept within 0..2**31-1, the range a ``seed`` preference may take (the image APIs' signed 32-bit seed). A lone
    surrogate, which UTF-8 cannot encode, is hashed as its three bytes (``surrogatepass``) rather than failing."""
    return int(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) & 0x7FFFFFFF


def run_project(context: StepContext) -> Project:
    """The run's project: the engine reads it with the unit's claim and sets it on every step's context."""
    if context.project is None:
        raise ValueError(f"step {context.step!r} was given a context without the run's project")
    return context.project


def run_owner(context: StepContext) -> User:
    """The run's owner: the engine reads it with the unit's claim and sets it on every step's context."""
    if context.owner is None:
        raise ValueError(f"step {context.step!r} was given a context without the run's owner")
    return context.owner


def compression_entry(step: str, input_size: int, output_size: int) -> dict[str, Any]:
    return {
        "step": step,
        "timestamp": timezone.now().isoformat(),
        "input_size": input_size,
        "output_size": output_size,
        "compression_ratio": round(output_size / input_size, 4) if input_size else 0.0,
    }


def output_folder(project_key: str, workflow_id: str) -> str:
    """The run's folder: under the project's internal key (``Project.pk``), never the id its owner chose, so a
    later project of the same public id starts empty. Both parts are validated ids (a key, a UUID)."""
    return workflow_output_folder(project_key, workflow_id)


def output_store(name: str, content: bytes) -> str:
    """Write ``content`` under exactly ``name`` (a retry overwrites its own earlier attempt), in the ``default``
    storage. An object store overwrites a name in one PUT; a local folder's storage would pick another name, so
    the earlier attempt is removed first."""
    if blob_storage_is_local(DEFAULT_STORAGE) and default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(content))
    if saved != name:  # pragma: no cover - only if another writer raced us to the same deterministic name
        default_storage.delete(saved)
        raise RuntimeError(f"storage saved {name!r} as {saved!r}")
    return saved

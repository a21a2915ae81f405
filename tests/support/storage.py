"""A storage backend for fault tests: after saving a file it announces it and waits, so the test can kill the
process at exactly that point (written, not yet committed)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage


class PauseAfterSaveStorage(FileSystemStorage):
    def _save(self, name: str, content: Any) -> str:
        saved = super()._save(name, content)
        marker = os.environ.get("COMICMEM_TEST_PAUSE_MARKER")
        if marker:
            Path(marker).write_text(saved)
            time.sleep(float(os.environ.get("COMICMEM_TEST_PAUSE_SECONDS", "120")))
        return saved

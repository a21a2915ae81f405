"""RELIABILITY.md names a test for every guarantee: each name must exist, so the document cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`((?:[\w/]+\.py)?)::(\w+)`|`([\w/]+\.py)`")


def references(text: str) -> list[tuple[str, str | None]]:
    """(file under tests/, test name or None) for every reference; `::name` continues the last file named."""
    found: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        last_file = None
        for match in REFERENCE.finditer(line):
            path, name, bare = match.groups()
            if bare:
                last_file = bare
                found.append((bare, None))
                continue
            last_file = path or last_file
            assert last_file, f"{name!r} follows no file name in: {line}"
            found.append((last_file, name))
    return found


def test_every_test_named_in_reliability_md_exists():
    refs = references((ROOT / "RELIABILITY.md").read_text(encoding="utf-8"))
    assert len(refs) > 40
    missing = []
    for path, name in refs:
        source = ROOT / "tests" / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^\s*(async )?def {name}\(", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"RELIABILITY.md names tests that do not exist: {missing}"

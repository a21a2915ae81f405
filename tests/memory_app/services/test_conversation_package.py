"""The conversation services package: its modules import only those below them, and it keeps its public names."""

from __future__ import annotations

import ast
from pathlib import Path

import memory_app.services.conversation as conversation

PACKAGE = "memory_app.services.conversation"
# Lowest first, as the package's docstring lists them.
ORDER = [
    "validation",
    "totals",
    "eviction",
    "persistence",
    "summary",
    "window",
    "recall",
    "lifecycle",
    "generate",
    "stream",
    "transfer",
    "release",
]


def _package_imports(module: str) -> set[str]:
    tree = ast.parse((Path(conversation.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
    return found


def test_each_module_imports_only_the_modules_below_it():
    modules = sorted(path.stem for path in Path(conversation.__file__).parent.glob("*.py") if path.stem != "__init__")
    assert modules == sorted(ORDER)

    upward = {
        module: sorted(
            name for name in _package_imports(module) if name.removeprefix(PACKAGE + ".") not in ORDER[:index]
        )
        for index, module in enumerate(ORDER)
    }

    assert upward == {module: [] for module in ORDER}


def test_the_package_keeps_the_names_its_callers_import():
    assert sorted(conversation.__all__) == [
        "Appended",
        "Generation",
        "MAX_RECALL_TOP_K",
        "MISSING",
        "NewMessage",
        "PERSISTENCE_VERSION",
        "REPLY_SUFFIX",
        "ROLES",
        "ReleaseReport",
        "ReplyDelta",
        "ReplyDone",
        "ReplyFailed",
        "ReplyStream",
        "context_append",
        "context_clear",
        "context_create",
        "context_delete",
        "context_export_document",
        "context_generate",
        "context_generate_stream",
        "context_get_or_create_default",
        "context_import",
        "context_refresh_summary",
        "context_release",
        "context_set_default",
        "contexts_release",
        "limit_validate",
        "message_problems",
        "message_validate",
        "recall_option",
        "released_context_restore",
    ]
    assert all(callable(getattr(conversation, name)) for name in conversation.__all__ if not name.isupper())
    assert (conversation.PERSISTENCE_VERSION, conversation.REPLY_SUFFIX) == ("1.0", ":reply")
    assert conversation.ROLES == ("system", "user", "assistant")

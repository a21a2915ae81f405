"""The history package's shape: one module per concern, each importing only the modules below it."""

from __future__ import annotations

import ast
from pathlib import Path

import memory_app.services.history as history_package

PACKAGE = "memory_app.services.history"
# From the bottom to the top, as the package's docstring lists them.
STACK = ["record", "archive_files", "archive", "transfer"]
DIRECTORY = Path(history_package.__file__).parent


def package_imports(module: str) -> set[str]:
    tree = ast.parse((DIRECTORY / f"{module}.py").read_text())
    return {
        node.module.removeprefix(PACKAGE).lstrip(".")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE)
    }


def test_every_module_of_the_package_is_in_the_stack():
    assert sorted(path.stem for path in DIRECTORY.glob("*.py") if path.stem != "__init__") == sorted(STACK)


def test_a_module_imports_only_modules_below_it():
    upward = {
        module: sorted(name for name in package_imports(module) if name not in STACK[:position])
        for position, module in enumerate(STACK)
    }
    assert upward == {module: [] for module in STACK}


def test_each_module_opens_with_a_docstring_and_stays_short():
    for module in STACK:
        text = (DIRECTORY / f"{module}.py").read_text()
        assert ast.get_docstring(ast.parse(text)), module
        assert len(text.splitlines()) <= 350, module


def test_the_package_keeps_the_names_callers_import():
    assert {
        "ArchiveVerificationFailed",
        "history_archive_batch",
        "history_archive_files_forget",
        "history_archive_read",
        "history_archive_run",
        "history_archive_sweep",
        "history_archive_verify_all",
        "history_export",
        "history_import",
        "history_record",
    } <= set(history_package.__all__)
    assert all(hasattr(history_package, name) for name in history_package.__all__)

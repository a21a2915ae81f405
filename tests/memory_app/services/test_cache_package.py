"""The cache package's shape: one module per concern, each importing only the modules below it in the stack."""

from __future__ import annotations

import ast
from pathlib import Path

import memory_app.services.cache as cache_package

PACKAGE = "memory_app.services.cache"
# From the bottom of the stack to the top, as the package's docstring lists them.
STACK = [
    "namespaces",
    "keys",
    "values",
    "shared",
    "counters",
    "redis_store",
    "local_store",
    "memory",
    "blobs",
    "hits",
    "files",
    "reads",
    "statistics",
    "operations",
    "compute",
    "cleanup",
]
DIRECTORY = Path(cache_package.__file__).parent


def package_imports(module: str) -> set[str]:
    tree = ast.parse((DIRECTORY / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            imported.add(node.module.removeprefix(PACKAGE).lstrip("."))
        elif isinstance(node, ast.Import):
            imported |= {
                alias.name.removeprefix(PACKAGE).lstrip(".") for alias in node.names if alias.name.startswith(PACKAGE)
            }
    return imported


def test_every_module_of_the_package_is_in_the_stack():
    assert sorted(path.stem for path in DIRECTORY.glob("*.py") if path.stem != "__init__") == sorted(STACK)


def test_a_module_imports_only_modules_below_it():
    upward = {
        module: sorted(name for name in package_imports(module) if name not in STACK[:position])
        for position, module in enumerate(STACK)
    }
    assert upward == {module: [] for module in STACK}  # "" would be the package itself, which imports them all


def test_each_module_opens_with_a_docstring_and_stays_short():
    for module in STACK:
        text = (DIRECTORY / f"{module}.py").read_text()
        assert ast.get_docstring(ast.parse(text)), module
        assert len(text.splitlines()) <= 500, module


def test_the_package_keeps_the_names_callers_import():
    assert {
        "SHARED_LAYER_ERRORS",
        "CacheLookup",
        "cache_canonical_json",
        "cache_cleanup",
        "cache_clear",
        "cache_counters_read",
        "cache_delete",
        "cache_file_read_verified",
        "cache_get",
        "cache_get_or_compute",
        "cache_key",
        "cache_lookup",
        "cache_memory_usage",
        "cache_namespace_directory",
        "cache_namespace_location",
        "cache_open",
        "cache_process_state_reset",
        "cache_set",
        "cache_set_stream",
        "cache_statistics_flush",
        "cached",
    } <= set(cache_package.__all__)
    assert all(hasattr(cache_package, name) for name in cache_package.__all__)

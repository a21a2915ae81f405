"""OpenAPI links (drf-spectacular post-processing hook): from the responses that create an object to every
operation that takes its id, so that a client generator or a stateful fuzzer (schemathesis) can follow them.

drf-spectacular has no API for links; this hook adds them after the schema is built. Each entry of ``SOURCES``
names a creating operation (path, method, status), where the new id is in its body (a JSON pointer into the
envelope) and the families of routes that take that id (a path prefix and the name of its path parameter).
Every operation under such a prefix whose path has that parameter gets a link. A link whose target or
parameter does not exist is a bug of this table, and ``schema_links_problems`` names it (a test runs it).
Import is no source: it may import no context at all, and a link must always resolve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Target:
    """Every operation whose path starts with ``prefix`` and has the path parameter ``parameter``."""

    prefix: str
    parameter: str


@dataclass(frozen=True)
class Source:
    path: str
    method: str
    status: str
    pointer: str  # where the id is in the response body, as a JSON pointer
    targets: tuple[Target, ...]
    name: str  # a word for the link names: GetContextById …


CONTEXT_TARGETS = (Target("/api/context/{context_id}/", "context_id"),)
MEMORY_CONTEXT_TARGETS = (Target("/api/memory/context/{context_id}/", "context_id"),)
PROJECT_TARGETS = (
    Target("/api/projects/{id}/", "id"),
    Target("/api/memory/history/{project_id}/", "project_id"),
    Target("/api/memory/timeline/{project_id}/", "project_id"),
)
STYLE_TARGETS = (Target("/api/styles/{template_id}/", "template_id"),)
WORKFLOW_TARGETS = (Target("/api/workflows/{workflow_id}/", "workflow_id"),)

SOURCES: tuple[Source, ...] = (
    Source("/api/context/", "post", "201", "/data/context_id", CONTEXT_TARGETS, "Context"),
    Source("/api/context/create/", "post", "201", "/data/context_id", CONTEXT_TARGETS, "Context"),
    Source("/api/context/generate-with-context/", "post", "200", "/data/context_id", CONTEXT_TARGETS, "Context"),
    Source("/api/memory/context/", "post", "201", "/data/context_id", MEMORY_CONTEXT_TARGETS, "Context"),
    Source("/api/memory/context/create/", "post", "201", "/data/context_id", MEMORY_CONTEXT_TARGETS, "Context"),
    Source(
        "/api/memory/context/generate-with-context/",
        "post",
        "200",
        "/data/context_id",
        MEMORY_CONTEXT_TARGETS,
        "Context",
    ),
    Source("/api/projects/", "post", "201", "/data/id", PROJECT_TARGETS, "Project"),
    Source("/api/styles/", "post", "201", "/data/template_id", STYLE_TARGETS, "Style"),
    Source("/api/workflows/", "post", "202", "/data/workflow_id", WORKFLOW_TARGETS, "Workflow"),
)


def _link_name(operation_id: str, name: str) -> str:
    words = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", operation_id) if part)
    return f"{words}With{name}"


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    paths: dict[str, Any] = result.get("paths", {})
    for source in SOURCES:
        response = paths.get(source.path, {}).get(source.method, {}).get("responses", {}).get(source.status)
        if response is None:
            continue  # the route is not in this schema (e.g. a generator limited to some paths)
        links: dict[str, Any] = response.setdefault("links", {})
        for target in source.targets:
            for path, path_item in paths.items():
                if not path.startswith(target.prefix) or "{" + target.parameter + "}" not in path:
                    continue
                for method in METHODS:
                    operation = path_item.get(method)
                    if operation is None or "operationId" not in operation:
                        continue
                    links[_link_name(operation["operationId"], source.name)] = {
                        "operationId": operation["operationId"],
                        "parameters": {target.parameter: f"$response.body#{source.pointer}"},
                        "description": f"The {source.name.lower()} this response created.",
                    }
    return result


def schema_links_problems(schema: dict[str, Any]) -> list[str]:
    """Links whose operation or parameter does not exist, or whose id pointer is not in the response's schema."""
    operations: dict[str, dict[str, Any]] = {}
    for path_item in schema.get("paths", {}).values():
        for method in METHODS:
            if method in path_item:
                operations[path_item[method]["operationId"]] = path_item[method]
    problems: list[str] = []
    for path, path_item in schema.get("paths", {}).items():
        for method in METHODS:
            for status, response in path_item.get(method, {}).get("responses", {}).items():
                for name, link in response.get("links", {}).items():
                    where = f"{method.upper()} {path} {status} link {name}"
                    target = operations.get(link.get("operationId", ""))
                    if target is None:
                        problems.append(f"{where}: no operation {link.get('operationId')!r}")
                        continue
                    parameters = {(p["in"], p["name"]) for p in target.get("parameters", [])}
                    for parameter in link.get("parameters", {}):
                        if ("path", parameter) not in parameters:
                            problems.append(f"{where}: {link['operationId']} has no path parameter {parameter!r}")
    return problems

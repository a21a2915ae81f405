"""The OpenAPI document is exact: schemathesis' response checks over every operation, with real ids.

``test_fuzz_api.py`` fuzzes with made-up ids, so most routes that take an id answer 404 there and their success
bodies are never checked. Here every path parameter names an object that exists (the ``world`` of conftest,
seen through a staff token), the bodies are schema-valid (positive generation), and every response must match
the document: status code, content type, headers, body, and the envelope. Then the stateful phase: schemathesis
follows the OpenAPI links from each creating response to the routes that take the new id.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (see requirements.txt)")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis.errors import Flaky  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from memory_app.api.schema_links import schema_links_problems  # noqa: E402
from tests.security.test_fuzz_api import envelope_conformance  # noqa: E402

pytestmark = pytest.mark.django_db

EXAMPLES_PER_OPERATION = int(os.environ.get("COMICMEM_CONFORMANCE_EXAMPLES", "3"))
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _closed(schema: Any) -> None:
    """Every object schema with declared properties refuses undeclared ones (recursively, in place): an answer
    with a field the document does not name fails the body check, so the document is exact, not just loose."""
    if isinstance(schema, list):
        for item in schema:
            _closed(item)
        return
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for value in schema.values():
        _closed(value)


def _load_schema() -> Any:
    """The document ``/api/schema/`` serves, its response schemas closed (``_closed``), answered in-process by
    the project's WSGI application."""
    from django.core.wsgi import get_wsgi_application
    from django.test import Client

    document = Client().get("/api/schema/?format=json").json()
    for name, component in document["components"]["schemas"].items():
        if not name.endswith("Request"):  # the request side stays as documented: extra input fields are ignored
            _closed(component)
    for path_item in document["paths"].values():
        for operation in path_item.values():
            _closed(operation.get("responses", {}))
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = get_wsgi_application()
    loaded.config.generation.update(modes=["positive"])
    # The stateful phase follows the document's own links only, not the ones schemathesis would infer.
    loaded.config.phases.stateful.inference.algorithms = []
    return loaded


schema = _load_schema()


def _real_ids(world: Any) -> dict[str, str]:
    return {
        "context_id": world.context_id,
        "project_id": world.project_id,
        "id": world.project_id,
        "workflow_id": world.workflow_id,
        "template_id": world.style_id,
        "character_id": str(world.character_id),
        "archive_id": str(world.archive_id),
        "name": world.output_name,
    }


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
def test_every_operation_answers_as_documented(case, world, staff_token, wsgi_requests):
    ids = _real_ids(world)
    if case.path_parameters:
        case.path_parameters = {name: ids.get(name, value) for name, value in case.path_parameters.items()}
    case.call_and_validate(
        headers={"Authorization": f"Token {staff_token}"},
        checks=CONFORMANCE,
        additional_checks=[envelope_conformance],
    )


def test_creating_responses_link_to_the_routes_that_take_their_ids():
    document = schema.raw_schema
    assert schema_links_problems(document) == []
    created = document["paths"]["/api/context/"]["post"]["responses"]["201"]["links"]
    targets = {link["operationId"] for link in created.values()}
    assert {"context_retrieve", "context_destroy", "context_clear_create", "context_messages_create"} <= targets
    assert all(link["parameters"] == {"context_id": "$response.body#/data/context_id"} for link in created.values())
    for path, method, status, operation_id in [
        ("/api/projects/", "post", "201", "projects_retrieve"),
        ("/api/projects/", "post", "201", "memory_timeline_retrieve"),
        ("/api/styles/", "post", "201", "styles_rate_create"),
        ("/api/workflows/", "post", "202", "workflows_history_retrieve"),
        ("/api/memory/context/create/", "post", "201", "memory_context_messages_list"),
    ]:
        found = document["paths"][path][method]["responses"][status]["links"]
        assert operation_id in {link["operationId"] for link in found.values()}, (path, operation_id)


ID_FIELDS = ("context_id", "id", "template_id", "workflow_id")


def test_the_stateful_phase_follows_the_links_to_the_detail_routes(world, staff_token, wsgi_requests):
    """Scenarios of the document's links only: every call is checked as above, and the ids that creating
    calls returned are then used by the routes that take them (which answer 2xx, so their bodies are checked)."""
    created: set[str] = set()
    linked: list[tuple[str, str, int]] = []
    failures: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Token {staff_token}"}}

        def before_call(self, case: Any) -> None:
            super().before_call(case)
            # A streamed generate's ids are in its last event, which links cannot name: whether a scenario's
            # context bundle fills would then depend on a drawn boolean, which Hypothesis reports as flaky. The
            # streamed answer is checked against the document by the first phase.
            if case.operation.path.endswith("/generate-with-context/") and isinstance(case.body, dict):
                case.body["stream"] = False

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if any(str(value) in created for value in (case.path_parameters or {}).values()):
                linked.append((case.method.upper(), case.operation.path, response.status_code))
            headers = {name.lower(): value for name, value in response.headers.items()}
            content_type = headers.get("content-type", [""])
            content_type = content_type[0] if isinstance(content_type, list) else content_type
            # JSON answers only: a streamed generate (text/event-stream) holds its ids in its ``done`` event.
            if (
                case.method.upper() == "POST"
                and response.status_code < 300
                and response.content
                and content_type.startswith("application/json")
            ):
                data = json.loads(response.content).get("data")
                if isinstance(data, dict):
                    created.update(str(data[key]) for key in ID_FIELDS if isinstance(data.get(key), str))

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            # Collected, not raised: Hypothesis would replay a failing scenario against a database the first run
            # changed, and report that instead of the finding.
            try:
                case.validate_response(response, checks=CONFORMANCE, additional_checks=[envelope_conformance])
            except Exception as failure:  # noqa: BLE001  # a FailureGroup or an assertion of envelope_conformance
                failures.append(f"{case.method.upper()} {case.operation.path}: {failure}\n{response.content[:500]!r}")

    families: set[str] = set()
    for _ in range(3):
        # A scenario's choices depend on the server's answers (the ids in the bundles), so Hypothesis can see one
        # choice sequence take another branch and stop the run with Flaky; every call made until then was checked
        # (``failures``), as schemathesis' own runner does. Another run goes on.
        with contextlib.suppress(Flaky):
            Machine.run(
                settings=settings(
                    max_examples=int(os.environ.get("COMICMEM_STATEFUL_EXAMPLES", "30")),
                    stateful_step_count=5,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate],
                )
            )
        families = {path.split("{")[0] for method, path, status in linked if 200 <= status < 300}
        if {"/api/context/", "/api/projects/"} <= families:
            break
    assert failures == []
    assert {"/api/context/", "/api/projects/"} <= families, sorted(set(linked))

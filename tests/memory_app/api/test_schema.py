from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.django_db


def test_schema_describes_the_envelope(api_client):
    response = api_client.get("/api/schema/")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    components = schema["components"]["schemas"]
    assert {"EnvelopeMetadata", "ApiError", "ErrorEnvelope"} <= set(components)
    project_get = schema["paths"]["/api/projects/{id}/"]["get"]["responses"]
    ok = project_get["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["success"]["enum"] == [True]
    assert ok["properties"]["data"]["$ref"] == "#/components/schemas/Project"
    assert project_get["404"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorEnvelope"
    assert "MEMORY_NOT_FOUND" in components["ApiError"]["properties"]["code"]["enum"]


def test_swagger_ui_is_served(api_client):
    response = api_client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()

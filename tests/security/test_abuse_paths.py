"""Path traversal in every field that reaches storage or names a stored thing: project ids (they name the
``projects/<id>/`` folders, archives and exports), ``previous_context`` project paths, cache namespaces and keys,
workflow output names, archive ids, style ids, context types. Each is refused with a 4xx envelope (or, where
the name is only looked up, not found) and nothing outside its folder is read, written or removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memory_app.errors import PreviousContextRefused
from memory_app.models import ConversationContext, HistoryRecord, Project, StyleTemplate, WorkflowState
from memory_app.services.cache import cache_get, cache_namespace_directory, cache_set
from memory_app.services.previous_context import previous_context_check
from tests.factories import HistoryRecordFactory
from tests.workflows.conftest import eager  # noqa: F401 - the fixture, used by name below

pytestmark = pytest.mark.django_db

# Every spelling of "leave this folder" we know of.
TRAVERSALS = [
    "..",
    ".",
    "../etc",
    "../../etc/passwd",
    "a/../b",
    "a/b",
    "/etc/passwd",
    "/abs",
    "..\\..\\windows",
    "a\\b",
    "a\x00b",
    "proj-001\x00.png",
    "%2e%2e",
    "%2e%2e%2fetc",
    "..%2f..%2fetc",
    "%252e%252e%252f",
    "..%252f",
    "%c0%ae%c0%ae",
    "\uff0e\uff0e",  # full-width dots
    "~root",
    "-rf",
    "a b",
    "",
    "x" * 65,
]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:400]
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("value", TRAVERSALS)
def test_a_project_id_that_could_leave_its_folder_is_refused(auth_client, value):
    response = auth_client.post("/api/projects/", {"id": value, "name": "x"}, format="json")

    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert list(error["details"]["fields"]) == ["id"]
    assert Project.objects.count() == 0


@pytest.mark.parametrize("value", ["../proj-001", "..%2Fproj-001", "%2e%2e", "proj-001/..", "proj-001%00"])
@pytest.mark.parametrize(
    "template",
    [
        "/api/memory/history/{value}",
        "/api/memory/history/{value}/archives",
        "/api/memory/history/{value}/archives/1",
        "/api/memory/timeline/{value}",
        "/api/projects/{value}",
        "/api/characters/?project_id={value}",
        "/api/workflows/?project_id={value}",
    ],
)
def test_a_project_id_in_a_url_never_reaches_another_project(staff_client, project, template, value):
    # The project exists (proj-001) and the staff user may see it: a traversal spelling still must not.
    HistoryRecordFactory(project=project)

    response = staff_client.get(template.format(value=value))

    assert response.status_code in {200, 400, 404}, response.content[:400]
    body = response.json()
    if response.status_code >= 400:
        assert body["success"] is False
        assert body["error"]["code"] in {"VALIDATION_ERROR", "MEMORY_NOT_FOUND", "NOT_FOUND", "MALFORMED_REQUEST"}
    else:
        # A filter that matches nothing: an empty page, never proj-001's rows.
        assert body["data"]["results"] == []


@pytest.mark.parametrize("value", ["../proj-001", "proj-001/../proj-001", "/proj-001", "proj-001\x00", "%2e%2e"])
def test_a_project_id_in_a_body_is_not_found_and_nothing_is_written(auth_client, project, value):
    before = (WorkflowState.objects.count(), ConversationContext.objects.count(), HistoryRecord.objects.count())

    started = auth_client.post(
        "/api/workflows/",
        {"workflow_type": "text_compression", "project_id": value, "input": {"text": "小明。"}},
        format="json",
    )
    context = auth_client.post("/api/context/create", {"project_id": value}, format="json")

    assert started.status_code in {400, 404}
    assert context.status_code in {400, 404}
    assert started.json()["success"] is context.json()["success"] is False
    after = (WorkflowState.objects.count(), ConversationContext.objects.count(), HistoryRecord.objects.count())
    assert after == before


@pytest.fixture
def project_image(project, media) -> str:
    from tests.memory_app.services.test_previous_context import png_bytes

    folder = media / "projects" / project.pk / "images"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes())
    return f"/projects/{project.pk}/images/a.png"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/projects/proj-001/../proj-002/images/a.png", "path_traversal"),
        ("/projects/proj-001/images/../../../../etc/passwd", "path_traversal"),
        ("/projects/proj-001/./images/a.png", "path_traversal"),
        ("/projects/proj-001//images/a.png", "path_traversal"),
        ("projects/proj-001/images/%2e%2e/%2e%2e/x.png", "path_form"),
        ("/projects/proj-001/images/%252e%252e/a.png", "path_form"),
        ("/projects/proj-001/images/..%2fa.png", "path_form"),
        ("/projects/proj-001/images/a.png%00.txt", "path_form"),
        ("/projects/proj-001\\..\\proj-002\\a.png", "path_form"),
        ("/projects/proj-002/images/a.png", "outside_project"),
        ("/projects/../etc/passwd", "outside_project"),
        ("/projects/proj-001", "outside_project"),
        ("/projects/proj-001/images/escape.png", "outside_project"),
    ],
)
def test_a_previous_context_project_path_is_confined_to_the_project(
    auth_client, project, project_image, media, tmp_path, django_capture_on_commit_callbacks, value, reason
):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not for you")
    os.symlink(outside, media / "projects" / "proj-001" / "images" / "escape.png")
    before = WorkflowState.objects.count()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(
            "/api/workflows/",
            {
                "workflow_type": "comic_generation",
                "project_id": "proj-001",
                "input": {"text": "小明。", "previous_context": value},
            },
            format="json",
        )

    error = assert_error(response, 400, "PREVIOUS_CONTEXT_REFUSED")
    assert error["details"]["reason"] == reason
    assert (WorkflowState.objects.count(), callbacks) == (before, [])


def test_a_nul_in_a_previous_context_path_is_refused_by_the_api_and_by_the_service(auth_client, project, media):
    value = "/projects/proj-001/images/a.png\x00.txt"

    response = auth_client.post(
        "/api/workflows/",
        {
            "workflow_type": "comic_generation",
            "project_id": "proj-001",
            "input": {"text": "小明。", "previous_context": value},
        },
        format="json",
    )

    assert assert_error(response, 400, "VALIDATION_ERROR")["details"]["fields"] == {
        "input": ["NUL (\\u0000) characters are not allowed (at 'previous_context')."]
    }
    with pytest.raises(PreviousContextRefused) as refused:
        previous_context_check(project=project, value=value)
    assert refused.value.details["reason"] == "path_form"
    assert WorkflowState.objects.count() == 0


def test_an_absolute_system_path_as_previous_context_is_only_text(project):
    # Not a project path: it enhances the prompt as words and no file is opened.
    checked = previous_context_check(project=project, value="/etc/passwd")

    assert (checked.kind, checked.storage_name) == ("text", None)
    with pytest.raises(PreviousContextRefused):
        previous_context_check(project=project, value="file:///etc/passwd")


@pytest.mark.parametrize("value", ["..", "../images", "..%2F..%2Fetc", "%2e%2e", "ai_images", "images%00", ".locks"])
def test_a_cache_namespace_outside_the_config_is_not_found_and_removes_nothing(staff_client, cache_root, value):
    sentinel = cache_root.parent / "sentinel.txt"
    sentinel.write_text("keep")
    (cache_root / "ai_images").mkdir()
    (cache_root / "ai_images" / "blob").write_text("keep")

    response = staff_client.delete(f"/api/memory/cache/{value}")

    assert response.status_code == 404, response.content[:300]
    assert response.json()["success"] is False

    assert sentinel.read_text() == "keep"
    assert (cache_root / "ai_images" / "blob").read_text() == "keep"


@pytest.mark.parametrize("key", ["../../../../outside", "/etc/passwd", "a\x00b", {"path": "../../x"}, "..\\..\\x"])
def test_a_cache_key_never_becomes_a_path(cache_namespaces, cache_root, key):
    cache_namespaces(files={"backend": "file", "max_size": 10})
    before = set(cache_root.parent.rglob("*"))

    assert cache_set(namespace="files", key=key, value=b"blob", content_type="application/octet-stream")

    directory = cache_namespace_directory(namespace="files")
    created = set(cache_root.parent.rglob("*")) - before
    assert created, "the entry was written somewhere"
    assert all(path == directory or directory in path.parents or path.parent == cache_root for path in created)
    assert cache_get(namespace="files", key=key) == b"blob"


@pytest.mark.slow
@pytest.mark.usefixtures("eager")
def test_a_workflow_output_name_is_looked_up_never_joined(
    auth_client, project, media, manga_shonen, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            "/api/workflows/",
            {
                "workflow_type": "comic_generation",
                "project_id": "proj-001",
                "input": {"text": "小明走进村口。王伯笑了。"},
            },
            format="json",
        )
    run_id = response.json()["data"]["workflow_id"]
    assert WorkflowState.objects.get(pk=run_id).status == "completed"
    assert auth_client.get(f"/api/workflows/{run_id}/outputs/page_001.png").status_code == 200
    secret = media / "projects" / "secret.png"
    secret.write_bytes(b"secret")

    for name in [
        "..%2F..%2Fsecret.png",
        "%2e%2e%2f%2e%2e%2fsecret.png",
        "..%252F..%252Fsecret.png",
        "page_001.png%00",
        "page_001.png%00.txt",
        "%2Fetc%2Fpasswd",
        "..",
        "panel_001.png%2F..%2F..%2F..%2Fsecret.png",
        "..%5C..%5Csecret.png",
    ]:
        answer = auth_client.get(f"/api/workflows/{run_id}/outputs/{name}")
        assert answer.status_code == 404, (name, answer.status_code)
        assert answer.json()["success"] is False


@pytest.mark.parametrize("value", ["../1", "1/../2", "%2e%2e", "1%00", "-1", "1e3", "9" * 30])
def test_an_archive_id_is_a_number_or_not_found(staff_client, project, value):
    response = staff_client.get(f"/api/memory/history/proj-001/archives/{value}")

    assert response.status_code == 404
    assert response.json()["success"] is False


@pytest.mark.parametrize("value", ["../x", "x/../y", "/abs", "x%00", "%2e%2e", "X", "a\\b"])
def test_a_style_id_is_a_plain_slug(auth_client, value):
    response = auth_client.post("/api/styles/", {"template_id": value, "name": "x"}, format="json")

    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert "template_id" in error["details"]["fields"]
    assert not StyleTemplate.objects.filter(owner__isnull=False).exists()


@pytest.mark.parametrize("value", ["../x", "a/b", "a\x00b", "%2e%2e%2f"])
def test_a_context_type_is_a_plain_word(auth_client, value):
    response = auth_client.post("/api/context/create", {"context_type": value}, format="json")

    assert_error(response, 400, "VALIDATION_ERROR")
    assert ConversationContext.objects.count() == 0


@pytest.mark.parametrize("value", ["..", "..%2F..", "%2e%2e", "not-a-uuid", "00000000-0000-0000-0000-00000000000%00"])
@pytest.mark.parametrize("suffix", ["", "/history", "/outputs/page_001.png"])
def test_a_workflow_id_that_is_not_a_uuid_is_not_found(auth_client, value, suffix):
    response = auth_client.get(f"/api/workflows/{value}{suffix}")

    assert response.status_code == 404
    assert response.json()["success"] is False


def test_the_traversal_list_covers_every_form_the_brief_names():
    forms = "".join(TRAVERSALS)
    assert all(part in forms for part in ("../", "/etc", "\x00", "%2e", "%252e", "\\"))
    assert Path("/etc/passwd").is_absolute()

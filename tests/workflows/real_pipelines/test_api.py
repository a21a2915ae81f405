"""POST /api/workflows/ for the real pipelines: refusals (4xx, code, nothing written or enqueued) and outputs."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from memory_app.models import HistoryRecord, WorkflowState, WorkflowUnit

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int, int]:
    return WorkflowState.objects.count(), WorkflowUnit.objects.count(), HistoryRecord.objects.count()


def post(client, workflow_type, data, preferences=None):
    body = {"workflow_type": workflow_type, "project_id": "proj-001", "input": data}
    if preferences is not None:
        body["preferences"] = preferences
    return client.post("/api/workflows/", body, format="json")


@pytest.mark.parametrize(
    ("workflow_type", "data", "preferences", "status", "code", "field"),
    [
        ("comic_generation", {"text": ""}, None, 400, "VALIDATION_ERROR", "input.text"),
        ("comic_generation", {"text": "   \n "}, None, 400, "VALIDATION_ERROR", "input.text"),
        ("text_compression", {}, None, 400, "VALIDATION_ERROR", "input.text"),
        ("text_compression", {"text": 42}, None, 400, "VALIDATION_ERROR", "input.text"),
        ("comic_generation", {"text": "小明。", "style": "no_such_style"}, None, 400, "VALIDATION_ERROR", "style"),
        (
            "text_compression",
            {"text": "小明。"},
            {"target_ratio": 1.5},
            400,
            "VALIDATION_ERROR",
            "preferences.target_ratio",
        ),
        (
            "comic_generation",
            {"text": "小明。"},
            {"segment_length": 0},
            400,
            "VALIDATION_ERROR",
            "preferences.segment_length",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_enqueued(
    auth_client, project, django_capture_on_commit_callbacks, workflow_type, data, preferences, status, code, field
):
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(auth_client, workflow_type, data, preferences)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert field in error["details"]["fields"]
    assert counts() == before
    assert callbacks == []


def test_a_text_without_a_seed_gets_a_default_seed_in_range(auth_client, project, django_capture_on_commit_callbacks):
    # The first 32 bits of this text's sha256 are over 2**31 - 1: the default seed must still be a valid one.
    text = "小明走进村口。"
    assert int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) > 2**31 - 1

    with django_capture_on_commit_callbacks(execute=False):
        response = post(auth_client, "comic_generation", {"text": text})

    assert response.status_code == 202, response.content
    seed = response.json()["data"]["preferences"]["seed"]
    assert 0 <= seed <= 2**31 - 1
    assert seed == int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) - 2**31


def test_text_over_the_size_limit_is_a_413(auth_client, project, settings, django_capture_on_commit_callbacks):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"max_input_chars": 10})}
    )
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(auth_client, "text_compression", {"text": "小明走进村口，老王在抽烟。"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "INPUT_TOO_LARGE"
    assert response.json()["error"]["details"]["limit"] == 10
    assert (counts(), callbacks) == (before, [])


@pytest.mark.parametrize(
    ("previous_context", "reason"),
    [
        ("http://127.0.0.1/x.png", "private_address"),
        ("http://169.254.169.254/latest/meta-data", "private_address"),
        ("file:///etc/passwd", "scheme"),
        ("/projects/proj-001/../proj-002/images/a.png", "path_traversal"),
        ("/projects/other-proj/images/a.png", "outside_project"),
        ("/projects/proj-001/images/missing.png", "missing"),
    ],
)
def test_bad_previous_context_is_refused(
    auth_client, project, media, django_capture_on_commit_callbacks, previous_context, reason
):
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(auth_client, "comic_generation", {"text": "小明。", "previous_context": previous_context})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("PREVIOUS_CONTEXT_REFUSED", reason)
    assert (counts(), callbacks) == (before, [])


def test_outputs_are_served_to_their_owner_only(
    auth_client, other_client, staff_client, project, media, story, run_inline
):
    response = run_inline(
        lambda: post(auth_client, "comic_generation", {"text": story}, {"segment_length": 80, "panels_per_page": 4})
    )
    assert response.status_code == 202
    run = WorkflowState.objects.get(pk=response.json()["data"]["workflow_id"])
    assert run.status == "completed", run.error
    pages = run.data["outputs"]["pages"]
    assert len(pages) == 1
    url = f"/api/workflows/{run.pk}/outputs/page_001.png"

    answer = auth_client.get(url)
    assert answer.status_code == 200
    assert answer["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(b"".join(answer.streaming_content))) as image:
        assert image.format == "PNG"

    refused = other_client.get(url)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "MEMORY_NOT_FOUND"
    assert staff_client.get(url).status_code == 200
    # An encoded path never matches the route; any other name must be one the run listed.
    assert auth_client.get(f"/api/workflows/{run.pk}/outputs/..%2F..%2Fsettings.py").status_code == 404
    for name in ("panel_999.png", "page_001.png.bak", "..", "settings.py"):
        missing = auth_client.get(f"/api/workflows/{run.pk}/outputs/{name}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "MEMORY_NOT_FOUND"


def test_a_previous_context_project_path_resolves_only_to_the_callers_project(
    client_for, media, django_capture_on_commit_callbacks
):
    """Alice and Bob each have a project "alpha"; only Alice's holds ref.png. Bob naming it by the shared id
    reads his own (empty) project; naming Alice's internal key is outside his project."""
    from memory_app.services.projects import project_create
    from tests.factories import UserFactory
    from tests.support.http_servers import png_bytes

    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    alice_project = project_create(owner=alice, project_id="alpha", name="Alice's")
    project_create(owner=bob, project_id="alpha", name="Bob's")
    folder = media / "projects" / alice_project.pk / "images"
    folder.mkdir(parents=True)
    (folder / "ref.png").write_bytes(png_bytes("blue"))
    before = counts()

    def start(user, previous_context):
        body = {
            "workflow_type": "comic_generation",
            "project_id": "alpha",
            "input": {"text": "小明。", "previous_context": previous_context},
        }
        return client_for(user).post("/api/workflows/", body, format="json")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        by_shared_id = start(bob, "/projects/alpha/images/ref.png")
        by_alices_key = start(bob, f"/projects/{alice_project.pk}/images/ref.png")

    reasons = [response.json()["error"]["details"]["reason"] for response in (by_shared_id, by_alices_key)]
    assert (by_shared_id.status_code, by_alices_key.status_code, reasons) == (400, 400, ["missing", "outside_project"])
    assert (counts(), callbacks) == (before, [])

    with django_capture_on_commit_callbacks(execute=False):
        alices = start(alice, "/projects/alpha/images/ref.png")

    assert alices.status_code == 202, alices.content[:300]
    run = WorkflowState.objects.get(pk=alices.json()["data"]["workflow_id"])
    assert (run.project_id, run.data["previous_context"]) == (alice_project.pk, "/projects/alpha/images/ref.png")
    assert alices.json()["data"]["project_id"] == "alpha"


def test_a_runs_files_are_shown_under_the_public_id_and_taken_back_from_there(
    client_for, user, media, story, run_inline, django_capture_on_commit_callbacks
):
    """Storage holds the files under the project's internal key; answers name them by its public id, and that
    name is what previous_context and the outputs route accept."""
    from memory_app.services.projects import project_create

    project = project_create(owner=user, project_id="alpha", name="Alpha")
    client = client_for(user)
    body = {
        "workflow_type": "comic_generation",
        "project_id": "alpha",
        "input": {"text": story},
        "preferences": {"segment_length": 80, "panels_per_page": 4},
    }
    started = run_inline(lambda: client.post("/api/workflows/", body, format="json"))
    run_id = started.json()["data"]["workflow_id"]

    shown = client.get(f"/api/workflows/{run_id}/")
    snapshots = client.get(f"/api/workflows/{run_id}/history/")
    history = client.get("/api/memory/history/alpha/", {"action_type": "image_generation_completed"})

    assert shown.json()["data"]["status"] == "completed", shown.json()["data"]["error"]
    (page,) = shown.json()["data"]["data"]["outputs"]["pages"]
    assert page == f"projects/alpha/images/{run_id}/page_001.png"
    assert WorkflowState.objects.get(pk=run_id).data["outputs"]["pages"] == [
        f"projects/{project.pk}/images/{run_id}/page_001.png"
    ]
    assert (media / "projects" / project.pk / "images" / run_id / "page_001.png").is_file()
    urls = [record["details"]["image_url"] for record in history.json()["data"]["records"]]
    assert urls and all(url.startswith("http://testserver/api/files/") for url in urls)
    assert all(client.get(url.removeprefix("http://testserver")).status_code == 200 for url in urls)
    assert sorted(shown.json()["data"]["output_urls"]) == ["page_001.png"] + [
        f"panel_{number:03d}.png" for number in range(1, len(urls) + 1)
    ]
    for answer in (shown, snapshots, history):
        assert project.pk not in answer.content.decode()
    assert client.get(f"/api/workflows/{run_id}/outputs/page_001.png").status_code == 200

    body = {**body, "input": {"text": "小明。", "previous_context": "/" + page}}
    with django_capture_on_commit_callbacks(execute=False):
        again = client.post("/api/workflows/", body, format="json")

    assert again.status_code == 202, again.content[:300]


def test_a_failed_runs_error_names_its_files_by_the_public_id(client_for, user):
    """A provider's message or a missing file in a run's error names the project's storage folder: the answer
    shows it under the public id, as it does the run's data."""
    from memory_app.services.projects import project_create
    from memory_app.services.workflow import workflow_create, workflow_fail

    project = project_create(owner=user, project_id="alpha", name="Alpha")
    run = workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["image_generation"],
        data={},
        preferences={},
    )
    missing = f"projects/{project.pk}/images/{run.pk}/panel_002.png"
    workflow_fail(workflow=run, error={"type": "FileNotFoundError", "message": f"No such file: '{missing}'"})
    client = client_for(user)

    shown = client.get(f"/api/workflows/{run.pk}/")
    snapshots = client.get(f"/api/workflows/{run.pk}/history/")

    assert shown.json()["data"]["error"]["message"] == f"No such file: 'projects/alpha/images/{run.pk}/panel_002.png'"
    assert snapshots.json()["data"]["snapshots"][-1]["error"]["message"] == shown.json()["data"]["error"]["message"]
    for answer in (shown, snapshots):
        assert project.pk not in answer.content.decode()
    assert WorkflowState.objects.get(pk=run.pk).error["message"] == f"No such file: '{missing}'"

"""previous_context: text, project paths confined to the project, and URLs behind the SSRF guard.

Refused targets must be refused before any connection: a real listener on 127.0.0.1 counts the connections
it accepts (it must see none), and ``socket.socket.connect`` is wrapped to record every attempt anywhere.
"""

from __future__ import annotations

import os

import pytest

from memory_app.errors import PreviousContextRefused, RetryableProviderError
from memory_app.services.previous_context import previous_context_check, previous_context_resolve
from tests.support.http_servers import ImageServer, png_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/a.png",
        "http://localhost:{port}/a.png",
        "http://[::1]:{port}/a.png",
        "http://[::ffff:127.0.0.1]:{port}/a.png",
        "http://2130706433:{port}/a.png",  # 127.0.0.1 as one decimal number
        "http://0x7f.1:{port}/a.png",  # hex and short forms getaddrinfo still accepts
        "http://0.0.0.0:{port}/a.png",
        "https://127.0.0.1:{port}/a.png",
        "http://user:pw@127.0.0.1:{port}/a.png",
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/a.png",
        "gopher://127.0.0.1:{port}/",
        "file:///etc/passwd",
    ],
)
def test_private_targets_are_refused_without_connecting(project, listener, connects, template):
    url = template.format(port=listener.port)

    with pytest.raises(PreviousContextRefused) as refused:
        previous_context_resolve(project=project, value=url)

    assert refused.value.code == "PREVIOUS_CONTEXT_REFUSED"
    assert connects == []
    assert listener.accepted == 0


def test_an_image_url_is_fetched_from_the_pinned_address_with_its_host_header(project, public_loopback):
    image = png_bytes()
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png"}, image)})
    try:
        resolved = previous_context_resolve(project=project, value=f"http://images.example:{server.port}/a.png")
    finally:
        server.close()

    assert (resolved.kind, resolved.image, resolved.content_type) == ("url_image", image, "image/png")
    assert server.hits == [("/a.png", f"images.example:{server.port}")]


def test_a_redirect_to_a_private_address_is_refused_without_connecting(project, public_loopback, listener, connects):
    target = f"http://[::ffff:127.0.0.1]:{listener.port}/secret"
    server = ImageServer({"/r": (302, {"Location": target}, b"")})
    try:
        with pytest.raises(PreviousContextRefused) as refused:
            previous_context_resolve(project=project, value=f"http://images.example:{server.port}/r")
    finally:
        server.close()

    assert refused.value.details["reason"] == "private_address"
    assert listener.accepted == 0
    assert [address[1] for address in connects] == [server.port]  # only the first hop was ever connected


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ((200, {"Content-Type": "text/html"}, b"<html></html>"), "content_type"),
        ((200, {"Content-Type": "image/svg+xml"}, b"<svg/>"), "content_type"),
        ((200, {"Content-Type": "image/png"}, b"not really a png"), "not_an_image"),
        ((200, {"Content-Type": "image/png"}, b"\x89PNG" + b"0" * 2000), "too_large"),
        ((404, {}, b""), "http_status"),
    ],
)
def test_non_images_and_oversized_answers_are_refused(project, public_loopback, settings, route, reason):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"previous_context_max_bytes": 1000})}
    )
    server = ImageServer({"/x": route})
    try:
        with pytest.raises(PreviousContextRefused) as refused:
            previous_context_resolve(project=project, value=f"http://images.example:{server.port}/x")
    finally:
        server.close()

    assert refused.value.details["reason"] == reason


def test_a_5xx_answer_is_retryable(project, public_loopback):
    server = ImageServer({"/x": (503, {}, b"")})
    try:
        with pytest.raises(RetryableProviderError):
            previous_context_resolve(project=project, value=f"http://images.example:{server.port}/x")
    finally:
        server.close()


def test_too_many_redirects_are_refused(project, public_loopback, settings):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    server = ImageServer(routes)
    routes["/loop"] = (302, {"Location": f"http://images.example:{server.port}/loop"}, b"")
    try:
        with pytest.raises(PreviousContextRefused) as refused:
            previous_context_resolve(project=project, value=f"http://images.example:{server.port}/loop")
    finally:
        server.close()

    assert refused.value.details["reason"] == "redirects"
    assert len(server.hits) == settings.MEMORY.pipelines.previous_context_max_redirects + 1


# --- project paths -----------------------------------------------------------------------------------------


@pytest.fixture
def project_image(project, media) -> bytes:
    folder = media / "projects" / "proj-001" / "images"
    folder.mkdir(parents=True)
    data = png_bytes("blue")
    (folder / "ref.png").write_bytes(data)
    return data


def test_a_project_image_is_read_from_the_projects_storage(project, project_image):
    resolved = previous_context_resolve(project=project, value="/projects/proj-001/images/ref.png")

    assert (resolved.kind, resolved.image, resolved.content_type) == ("project_image", project_image, "image/png")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/projects/proj-001/images/../../proj-002/x.png", "path_traversal"),
        ("/projects/proj-001/./images/ref.png", "path_traversal"),
        ("/projects/proj-001/images/%2e%2e/ref.png", "path_form"),
        ("/projects/proj-001/images/ref.png\x00.txt", "path_form"),
        ("/projects/proj-001\\images\\ref.png", "path_form"),
        ("/projects/proj-002/images/ref.png", "outside_project"),
        ("/projects/proj-001", "outside_project"),
        ("/projects/proj-001/images/nothing.png", "missing"),
    ],
)
def test_project_paths_outside_or_odd_are_refused(project, project_image, value, reason):
    with pytest.raises(PreviousContextRefused) as refused:
        previous_context_check(project=project, value=value)

    assert refused.value.details["reason"] == reason


def test_a_symlink_escaping_the_project_is_refused(project, project_image, media, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes())
    os.symlink(outside, media / "projects" / "proj-001" / "images" / "link.png")

    with pytest.raises(PreviousContextRefused) as refused:
        previous_context_check(project=project, value="/projects/proj-001/images/link.png")

    assert refused.value.details["reason"] == "outside_project"


def test_text_enhances_the_prompt_and_long_text_is_refused(project):
    resolved = previous_context_resolve(project=project, value="  上一话, 小明在山顶迷路了。 ")
    assert (resolved.kind, resolved.text) == ("text", "上一话, 小明在山顶迷路了。")
    with pytest.raises(PreviousContextRefused):
        previous_context_check(project=project, value="长" * 2001)
    assert previous_context_check(project=project, value=None).kind == "none"


def test_a_later_project_of_the_same_id_never_sees_an_earlier_ones_files(media):
    from memory_app.services.projects import project_create, project_delete
    from tests.factories import UserFactory

    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    earlier = project_create(owner=alice, project_id="alpha", name="Earlier")
    folder = media / "projects" / earlier.pk / "images"
    folder.mkdir(parents=True)
    (folder / "ref.png").write_bytes(png_bytes("blue"))
    assert previous_context_check(project=earlier, value="/projects/alpha/images/ref.png").kind == "project_image"
    project_delete(project=earlier)

    for owner in (alice, bob):
        later = project_create(owner=owner, project_id="alpha", name="Later")
        with pytest.raises(PreviousContextRefused) as refused:
            previous_context_check(project=later, value="/projects/alpha/images/ref.png")
        assert (later.public_id, later.pk != earlier.pk, refused.value.details["reason"]) == ("alpha", True, "missing")
        project_delete(project=later)

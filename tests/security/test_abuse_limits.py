"""Resource abuse: oversized bodies, deeply nested JSON, too many form fields, huge page sizes and page numbers,
and throttling — each a 4xx in the envelope, never a 500, and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from memory_app.models import Project
from tests.support.rows import written

pytestmark = pytest.mark.django_db

REPO_ROOT = Path(__file__).resolve().parents[2]

WRITES = [
    "/api/projects/",
    "/api/context/create",
    "/api/memory/context",
    "/api/context/import",
    "/api/context/generate-with-context",
    "/api/styles/",
    "/api/workflows/",
]
LISTS = [
    "/api/projects/",
    "/api/context/",
    "/api/memory/context",
    "/api/characters/",
    "/api/styles/",
    "/api/workflows/",
    "/api/memory/history/proj-001",
]


def assert_envelope_error(response, statuses: set[int]) -> dict:
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("path", WRITES)
def test_a_body_over_the_limit_is_413_before_it_is_read(auth_client, project, settings, path):
    limit = settings.MEMORY.api.max_body_bytes
    before = written()

    response = auth_client.post(path, data='{"name": "%s"}' % ("x" * limit), content_type="application/json")

    error = assert_envelope_error(response, {413})
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"]["limit_bytes"] == limit
    assert written() == before


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xx"])
def test_a_form_body_over_the_limit_is_413(auth_client, settings, content_type):
    # DATA_UPLOAD_MAX_MEMORY_SIZE is the API's own limit: a form body is refused as early as a JSON one.
    assert settings.MEMORY.api.max_body_bytes == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = "name=" + "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = auth_client.post("/api/projects/", data=body, content_type=content_type)

    assert assert_envelope_error(response, {413})["code"] == "PAYLOAD_TOO_LARGE"
    assert Project.objects.count() == 0


def test_a_form_with_too_many_fields_is_a_4xx(auth_client, settings):
    fields = "&".join(f"f{index}=1" for index in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 10))

    response = auth_client.post(
        "/api/projects/", data=f"name=x&{fields}", content_type="application/x-www-form-urlencoded"
    )

    assert_envelope_error(response, {400, 413})
    assert Project.objects.count() == 0


def test_a_multipart_body_with_too_many_files_is_a_4xx(auth_client, settings):
    parts = "".join(
        f'--xx\r\nContent-Disposition: form-data; name="f{index}"; filename="f{index}.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nx\r\n"
        for index in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 5)
    )

    response = auth_client.post(
        "/api/projects/", data=f"{parts}--xx--\r\n", content_type="multipart/form-data; boundary=xx"
    )

    assert_envelope_error(response, {400, 413})
    assert Project.objects.count() == 0


@pytest.mark.parametrize("path", WRITES)
@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_json_nested_past_the_parser_is_400(auth_client, project, path, depth):
    before = written()
    body = "[" * depth + "]" * depth

    response = auth_client.post(path, data=body, content_type="application/json")

    assert assert_envelope_error(response, {400})["code"] == "MALFORMED_REQUEST"
    assert written() == before


@pytest.mark.parametrize("depth", [60, 400, 900])
@pytest.mark.parametrize(
    ("path", "make_body"),
    [
        ("/api/context/create", lambda value: {"metadata": {"deep": value}}),
        ("/api/styles/", lambda value: {"template_id": "deep_style", "name": "d", "visual_parameters": {"v": value}}),
        (
            "/api/workflows/",
            lambda value: {
                "workflow_type": "text_compression",
                "project_id": "proj-001",
                "input": {"text": "小明。", "deep": value},
            },
        ),
        ("/api/projects/", lambda value: {"id": "deep", "name": value}),
    ],
)
def test_json_nested_deep_but_parseable_is_stored_cut_or_refused_never_a_500(
    auth_client, project, django_capture_on_commit_callbacks, path, make_body, depth
):
    with django_capture_on_commit_callbacks(execute=False):
        response = auth_client.post(path, data=json.dumps(make_body(nested(depth))), content_type="application/json")

    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        assert_envelope_error(response, {400, 413})
    else:
        # What was kept is cut at the redaction depth: a reader can render it.
        assert len(response.content) < 100_000


PAGED = [path for path in LISTS if not path.startswith("/api/memory/history/")]


@pytest.mark.parametrize("path", PAGED)
@pytest.mark.parametrize(
    "query",
    [
        "page_size=1000000000",
        "page_size=99999999999999999999999999",
        "page_size=0",
        "page_size=-1",
        "page_size=abc",
        "page_size=1e9",
        "page=99999999999999999999",
        "page=-1",
        "page=abc",
        "page=0",
    ],
)
def test_a_huge_or_bad_page_size_or_number_is_a_4xx(auth_client, project, path, query):
    response = auth_client.get(f"{path}?{query}")

    error = assert_envelope_error(response, {400, 404})
    expected = "VALIDATION_ERROR" if query.startswith("page_size") else "MEMORY_NOT_FOUND"
    assert error["code"] == expected


@pytest.mark.parametrize("query", ["limit=1000000000", "limit=99999999999999999999", "limit=0", "limit=-5", "limit=x"])
def test_a_huge_or_bad_history_limit_is_a_400(auth_client, project, query):
    response = auth_client.get(f"/api/memory/history/proj-001?{query}")

    assert assert_envelope_error(response, {400})["details"]["fields"].keys() == {"limit"}


def test_the_largest_page_size_is_accepted_and_one_more_is_refused(auth_client, project, settings):
    maximum = settings.MEMORY.api.max_page_size

    assert auth_client.get(f"/api/projects/?page_size={maximum}").status_code == 200
    error = assert_envelope_error(auth_client.get(f"/api/projects/?page_size={maximum + 1}"), {400})
    assert error["details"]["fields"] == {"page_size": [f"Must be between 1 and {maximum}."]}


@pytest.fixture
def low_rates(monkeypatch):
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "3/min", "auth": "3/min", "login": "1000/min"}
    )


@pytest.mark.usefixtures("low_rates")
@pytest.mark.parametrize("path", ["/api/projects/", "/api/context/", "/api/workflows/", "/api/memory/history/proj-001"])
def test_a_user_over_the_rate_gets_429_in_the_envelope(auth_client, project, path):
    statuses = [auth_client.get(path).status_code for _ in range(3)]

    response = auth_client.get(path)

    assert statuses == [200, 200, 200]
    error = assert_envelope_error(response, {429})
    assert error["code"] == "THROTTLED"
    assert int(response["Retry-After"]) >= 1
    assert error["details"]["retry_after_seconds"] == int(response["Retry-After"])


@pytest.mark.usefixtures("low_rates")
def test_a_throttled_write_writes_nothing(auth_client):
    for index in range(3):
        assert auth_client.post("/api/projects/", {"name": f"p{index}"}, format="json").status_code == 201

    response = auth_client.post("/api/projects/", {"name": "one too many"}, format="json")

    assert assert_envelope_error(response, {429})["code"] == "THROTTLED"
    assert Project.objects.count() == 3


@pytest.mark.usefixtures("low_rates")
@pytest.mark.parametrize("proxies", [0, 1])
def test_a_made_up_forwarded_for_header_does_not_escape_the_login_throttle(api_client, settings, proxies):
    # 0: clients connect directly; 1: production, one proxy that appends the client's address.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    payload = {"username": "nobody", "password": "wrong"}

    def attempt(index: int):
        forged = f"198.51.100.{index}"
        header = forged if proxies == 0 else f"{forged}, 203.0.113.7"
        return api_client.post("/api/auth/token/", payload, format="json", HTTP_X_FORWARDED_FOR=header)

    statuses = [attempt(index).status_code for index in range(3)]
    response = attempt(99)

    assert statuses == [401, 401, 401]
    assert assert_envelope_error(response, {429})["code"] == "THROTTLED"


def test_wrong_tokens_are_throttled_per_address_and_a_right_token_still_works(
    api_client, user, django_assert_num_queries, monkeypatch
):
    # Three wrong guesses a minute; the user's own rate is not what this test is about.
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "100/min", "auth": "3/min", "login": "1000/min"}
    )
    # DRF authenticates before it throttles: without the failed-token throttle a wrong token was a 401 at any rate.
    right = f"Token {Token.objects.create(user=user).key}"

    def get(authorization: str, address: str = "198.51.100.7"):
        return api_client.get("/api/projects/", HTTP_AUTHORIZATION=authorization, REMOTE_ADDR=address)

    # Right tokens are not counted: two of them between the wrong ones leave the three wrong guesses.
    statuses = [get(token).status_code for token in (right, "Token wrong-1", right, "Token wrong-2", "Token x y")]
    with django_assert_num_queries(1):  # the token is still looked up (one query), then refused
        response = get("Token wrong-4")

    assert statuses == [200, 401, 200, 401, 401]
    error = assert_envelope_error(response, {429})
    assert error["code"] == "THROTTLED"
    assert int(response["Retry-After"]) >= 1
    # A right token from that address is still served (one stale client behind a NAT locks nobody out) and does
    # not reset the count: the address's next wrong token is a 429 again. Another address is not touched.
    assert get(right).status_code == 200
    assert get("Token wrong-5").status_code == 429
    assert get(right, address="198.51.100.8").status_code == 200
    assert get("Token wrong-5", address="198.51.100.8").status_code == 401


@pytest.mark.usefixtures("low_rates")
def test_a_stale_password_locks_out_only_its_username_on_that_address(api_client, user, other_user):
    # The "auth" rate is 3/min here. A client behind a NAT keeps sending alice's old password.
    user.set_password("alice-new-password")
    user.save()
    other_user.set_password("bob-password")
    other_user.save()

    def login(username: str, password: str, address: str = "198.51.100.7"):
        body = {"username": username, "password": password}
        return api_client.post("/api/auth/token/", body, format="json", REMOTE_ADDR=address)

    stale = [login("alice", "alice-old-password").status_code for _ in range(3)]
    refused = login("alice", "alice-old-password")

    assert stale == [401, 401, 401]
    assert assert_envelope_error(refused, {429})["code"] == "THROTTLED"
    assert int(refused["Retry-After"]) >= 1
    # Bob, behind the same address, logs in (and again: right passwords are not counted).
    assert [login("bob", "bob-password").status_code for _ in range(5)] == [200] * 5
    # Alice's right password from that address waits too: a guesser must not tell a right guess by its 200.
    assert login("alice", "alice-new-password").status_code == 429
    assert login("alice", "alice-new-password", address="198.51.100.8").status_code == 200


@pytest.mark.usefixtures("low_rates")
def test_wrong_passwords_spread_over_usernames_meet_the_address_bound(api_client, other_user):
    from memory_app.api.authentication import LOGIN_FAILURES_PER_ADDRESS_FACTOR

    other_user.set_password("bob-password")
    other_user.save()
    bound = 3 * LOGIN_FAILURES_PER_ADDRESS_FACTOR

    def login(username: str, password: str, address: str = "198.51.100.7"):
        body = {"username": username, "password": password}
        return api_client.post("/api/auth/token/", body, format="json", REMOTE_ADDR=address)

    statuses = [login(f"guess-{index}", "password").status_code for index in range(bound)]

    assert statuses == [401] * bound
    assert assert_envelope_error(login("guess-new", "password"), {429})["code"] == "THROTTLED"
    assert login("bob", "bob-password").status_code == 429
    assert login("bob", "bob-password", address="198.51.100.8").status_code == 200


def test_production_counts_one_proxy(monkeypatch):
    import importlib
    import sys

    monkeypatch.setenv("SECRET_KEY", "x" * 60)
    monkeypatch.setenv("ALLOWED_HOSTS", "comics.example.com")
    monkeypatch.delenv("NUM_PROXIES", raising=False)
    monkeypatch.delitem(sys.modules, "comicmem_site.settings.production", raising=False)
    production = importlib.import_module("comicmem_site.settings.production")
    monkeypatch.delitem(sys.modules, "comicmem_site.settings.production")

    assert production.REST_FRAMEWORK["NUM_PROXIES"] == 1


@pytest.mark.usefixtures("low_rates")
def test_one_users_throttle_does_not_touch_another(auth_client, other_client):
    for _ in range(4):
        auth_client.get("/api/projects/")

    assert auth_client.get("/api/projects/").status_code == 429
    assert other_client.get("/api/projects/").status_code == 200


@pytest.mark.slow
def test_an_oversized_body_is_413_even_as_the_first_request_of_a_fresh_process(tmp_path):
    # The body limit answers from middleware, before any view (and so before DRF's views) was imported.
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "response = Client().post('/api/projects/', data='x' * (4 * 1024 * 1024), content_type='application/json')\n"
        "print(response.status_code, response.json()['error']['code'])\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.test",
        "COMICMEM_VAR_DIR": str(tmp_path),
    }

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["413", "PAYLOAD_TOO_LARGE"]


def test_a_query_string_with_too_many_parameters_is_a_4xx_envelope(auth_client, project, settings):
    query = "&".join(f"p{index}=1" for index in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 10))

    response = auth_client.get(f"/api/workflows/?{query}")

    assert_envelope_error(response, {400, 413})


def test_every_login_attempt_meets_the_login_rate_per_address(api_client, other_user, monkeypatch):
    # Right passwords give their failure places back, so without a bound on attempts one valid account could make
    # the server hash passwords without end.
    rates = {"anon": "1000/min", "user": "1000/min", "auth": "1000/min", "login": "4/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    other_user.set_password("bob-password")
    other_user.save()

    def login(address: str):
        body = {"username": "bob", "password": "bob-password"}
        return api_client.post("/api/auth/token/", body, format="json", REMOTE_ADDR=address)

    statuses = [login("198.51.100.7").status_code for _ in range(4)]
    refused = login("198.51.100.7")

    assert statuses == [200] * 4
    assert assert_envelope_error(refused, {429})["code"] == "THROTTLED"
    assert login("198.51.100.8").status_code == 200

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_token_for_correct_credentials_authenticates(api_client, user):
    response = api_client.post("/api/auth/token/", {"username": "alice", "password": "pass-word-123"}, format="json")

    assert response.status_code == 200
    token = response.json()["data"]["token"]
    assert token == Token.objects.get(user=user).key
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get("/api/projects/").status_code == 200


def test_wrong_password_is_401_and_creates_no_token(api_client, user):
    response = api_client.post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_FAILED"
    assert not Token.objects.filter(user=user).exists()


def test_missing_fields_are_named(api_client):
    response = api_client.post("/api/auth/token/", {}, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["details"]["fields"]) == {"username", "password"}


def test_session_login_works_for_the_api(api_client, user):
    api_client.force_login(user)

    assert api_client.get("/api/projects/").status_code == 200


def test_create_api_user_command_prints_a_working_token(api_client, capsys):
    call_command("create_api_user", "carol", "--password", "s3cret-pass")

    output = capsys.readouterr().out
    token = next(line.split()[-1] for line in output.splitlines() if line.startswith("token:"))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get("/api/projects/").status_code == 200


def test_create_api_user_refuses_a_taken_name(user):
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_api_user", "alice")


def test_ensure_demo_user_creates_one_staff_user_once(settings, tmp_path, capsys):
    from django.contrib.auth import get_user_model

    settings.VAR_DIR = tmp_path
    call_command("ensure_demo_user")
    call_command("ensure_demo_user")

    users = get_user_model().objects.filter(is_staff=True)
    assert [user.username for user in users] == ["demo"]
    output = capsys.readouterr().out
    assert output.count("Created the staff user") == 1
    assert "password:" in output
    assert (tmp_path / "demo-login.txt").stat().st_mode & 0o077 == 0


def test_a_token_request_reads_the_token_and_its_user_in_one_statement(auth_client, user, django_assert_num_queries):
    with django_assert_num_queries(2):  # the token with its user; the user's projects
        response = auth_client.get("/api/projects/")

    assert response.status_code == 200
    assert response.wsgi_request.user == user
    assert response.wsgi_request.auth.user is response.wsgi_request.user


def test_an_unknown_token_is_401_and_an_inactive_users_token_too(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    unknown = api_client.get("/api/projects/")
    token, _ = Token.objects.get_or_create(user=user)
    user.is_active = False
    user.save()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    inactive = api_client.get("/api/projects/")

    assert (unknown.status_code, unknown.json()["error"]["message"]) == (401, "Invalid token.")
    assert (inactive.status_code, inactive.json()["error"]["message"]) == (401, "User inactive or deleted.")

"""API users and their tokens."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token

from memory_app.errors import AuthenticationFailed, Conflict


@transaction.atomic
def user_create(
    *, username: str, password: str, email: str = "", is_staff: bool = False
) -> tuple[AbstractBaseUser, Token]:
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise Conflict(f"User '{username}' exists already.", details={"username": username})
    user = user_model.objects.create_user(username=username, password=password, email=email, is_staff=is_staff)
    token, _ = Token.objects.get_or_create(user=user)
    return user, token


def auth_token_obtain(*, username: str, password: str) -> Token:
    """The user's API token (created on first use) for a correct username and password."""
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise AuthenticationFailed()
    token, _ = Token.objects.get_or_create(user=user)
    return token

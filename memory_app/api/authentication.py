"""Token authentication and logins whose failures are throttled, without refusing a right credential to everyone
behind the same address.

Kept apart from the views: DRF imports its default authentication classes while it defines ``APIView``, so
this module must not import ``rest_framework.views``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.request import Request

from memory_app.api.throttling import AtomicFailureCounter

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# A password guesser spreading its guesses over many usernames meets this bound per address (the ``auth`` rate
# times this), well above what the people behind one NAT get wrong in a minute.
LOGIN_FAILURES_PER_ADDRESS_FACTOR = 5


class FailureThrottle(AtomicFailureCounter):
    """Failed credentials of one ``kind`` from one client address (and, given a ``subject``, for that username),
    at the ``auth`` rate times ``factor``. Only failures are counted (one atomic increment each, so wrong guesses
    sent at once are all counted); ``exhausted`` counts nothing."""

    scope = "auth"

    def __init__(self, request: Request, *, kind: str, subject: str | None = None, factor: int = 1) -> None:
        super().__init__()
        self.num_requests *= factor
        ident = self.get_ident(request)
        if subject is not None:
            # A digest: a username of any length or character makes a bounded, valid cache key.
            ident = f"{ident}:{hashlib.sha256(subject.encode()).hexdigest()[:32]}"
        self.key = self.cache_format % {"scope": f"auth-failed-{kind}", "ident": ident}

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.key


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, whose failures count against the client's address.

    DRF authenticates before it throttles, so without this a wrong token never reached the throttles. The token
    is always looked up: a right one authenticates whatever its address did (one stale client behind a NAT must
    not lock out everyone behind it); a wrong one from an address that used up its wrong guesses (the ``auth``
    rate) is a 429 instead of a 401, and counts no further. A guesser is then told "wrong" by a 429 instead of
    a 401, so the throttle does not slow guessing down: what stops it is the token itself, 160 random bits
    (DRF's 40 hex characters from ``os.urandom``), out of reach at any request rate.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # another scheme, or none: not a token guess
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle = FailureThrottle(request, kind="token")
            if throttle.exhausted():
                raise exceptions.Throttled(wait=throttle.wait()) from None
            throttle.record_failure()
            raise

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        # DRF's own, with its lookup in one plain SELECT: it runs on every token-authenticated request. Imported
        # here, as DRF imports its Token model: this module is imported while DRF defines APIView, maybe before
        # the apps are ready.
        from memory_app.selectors.users import user_token_get

        found = user_token_get(key=key)
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token


def authenticated_user(request: Request) -> User:
    """The signed-in user of a view that lets no one else in (DRF's default ``IsAuthenticated``, ``IsAdminUser``):
    the user the services take, never the anonymous one."""
    user = request.user
    if not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return user


def login_failure_throttles(request: Request, *, username: str) -> list[FailureThrottle]:
    """The bounds on wrong passwords from the request's address: per username at the ``auth`` rate, and for all
    usernames together at ``LOGIN_FAILURES_PER_ADDRESS_FACTOR`` times it.

    Unlike a token, a password may be guessable: a login whose bound is used up is refused before the password
    is checked, or a guesser would learn a right guess from its 200 among the 429s. So a person whose stale
    client keeps sending a wrong password waits (60 s at most), but only for that username: everyone else
    behind the same address logs in.
    """
    return [
        FailureThrottle(request, kind="login", subject=username),
        FailureThrottle(request, kind="login-any", factor=LOGIN_FAILURES_PER_ADDRESS_FACTOR),
    ]

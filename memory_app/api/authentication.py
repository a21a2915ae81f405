"""Token authentication whose failures are throttled per client address.

Kept apart from the views: DRF imports its default authentication classes while it defines ``APIView``, so
this module must not import ``rest_framework.views``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class FailedTokenThrottle(SimpleRateThrottle):
    """Wrong tokens per client address, at the ``auth`` rate of the login route."""

    scope = "auth"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": "auth-failed-token", "ident": self.get_ident(request)}

    def exhausted(self, request: Request) -> bool:
        """Whether this address has no wrong guess left in the window; records nothing."""
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) >= self.num_requests


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, whose failures count against the client's address.

    DRF authenticates before it throttles, so a request with a wrong token never reached the throttles and
    tokens could be guessed at any rate. Now an address that used up its wrong guesses (the ``auth`` rate) gets
    a 429 before its token is looked up; requests with a right token are never counted.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # another scheme, or none: not a token guess
        throttle = FailedTokenThrottle()
        if throttle.exhausted(request):
            raise exceptions.Throttled(wait=throttle.wait())
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.throttle_success()  # records this failure in the address's window
            raise

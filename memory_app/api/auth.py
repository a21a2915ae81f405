"""POST /api/auth/token/: username and password → API token."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import FailureThrottle, login_failure_throttles
from memory_app.api.fields import StrictCharField
from memory_app.api.throttling import AtomicScopedRateThrottle
from memory_app.errors import AuthenticationFailed
from memory_app.services.users import auth_token_obtain


class TokenRequestSerializer(serializers.Serializer[Any]):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer[Any]):
    token = serializers.CharField()
    username = serializers.CharField()


class TokenObtainView(APIView):
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    # Wrong passwords are counted apart (login_failure_throttles), so a stale client behind a NAT does not lock
    # out everyone behind it; every attempt, right or wrong, meets the generous ``login`` rate per address, as
    # each costs a password hash.
    throttle_classes = [AtomicScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenResponseSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        throttles = login_failure_throttles(request, username=serializer.validated_data["username"])
        # Each bound takes this attempt's place before the password is checked, so attempts sent at once cannot
        # all pass a check made before any of them failed; a right password gives its places back.
        reserved: list[FailureThrottle] = []
        for throttle in throttles:
            if not throttle.reserve():
                for taken in reserved:
                    taken.release()
                raise exceptions.Throttled(wait=throttle.wait())
            reserved.append(throttle)
        try:
            token = auth_token_obtain(**serializer.validated_data)
        except AuthenticationFailed:
            raise  # a wrong password keeps its places
        except BaseException:
            for throttle in reserved:
                throttle.release()
            raise
        for throttle in reserved:
            throttle.release()
        return Response({"token": token.key, "username": token.user.get_username()})

"""POST /api/auth/token/: username and password → API token."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.fields import StrictCharField
from memory_app.api.throttling import AtomicScopedRateThrottle
from memory_app.services.users import auth_token_obtain


class TokenRequestSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    username = serializers.CharField()


class TokenObtainView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AtomicScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenResponseSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = auth_token_obtain(**serializer.validated_data)
        return Response({"token": token.key, "username": token.user.get_username()})

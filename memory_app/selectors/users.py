"""API tokens: the lookup every token-authenticated request makes."""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections
from rest_framework.authtoken.models import Token

from memory_app.selectors.statements import column, model_columns


@functools.cache
def _token_statement(alias: str) -> str:
    user_model = get_user_model()
    tokens, users = model_columns(alias, Token), model_columns(alias, user_model)
    quote = connections[alias].ops.quote_name
    return (
        f"SELECT {tokens.select}, {users.select} FROM {quote(Token._meta.db_table)} "  # noqa: S608 - model metadata
        f"INNER JOIN {quote(user_model._meta.db_table)} "
        f"ON ({column(alias, Token, 'user')} = {column(alias, user_model, user_model._meta.pk.name)}) "
        f"WHERE {column(alias, Token, 'key')} = %s"
    )


def user_token_get(*, key: str) -> tuple[AbstractBaseUser, Token] | None:
    """The token of ``key`` and its user (active or not), or None: what DRF's ``TokenAuthentication`` reads with
    ``Token.objects.select_related("user").get(key=key)``, in one plain SELECT (``selectors.statements``)."""
    alias = Token.objects.db
    user_model = get_user_model()
    with connections[alias].cursor() as cursor:
        cursor.execute(_token_statement(alias), [key])
        row = cursor.fetchone()
    if row is None:
        return None
    tokens, users = model_columns(alias, Token), model_columns(alias, user_model)
    width = len(tokens.attnames)
    token = tokens.instance(Token, row[:width])
    user = users.instance(user_model, row[width:])
    token.user = user  # the relation's cache, as select_related fills it
    return user, token

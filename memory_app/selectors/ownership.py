"""The one ownership scope every endpoint uses: a user sees their own objects; staff see all."""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, QuerySet

ModelT = TypeVar("ModelT", bound=Model)


def scope_to_owner(
    queryset: QuerySet[ModelT], *, user: AbstractBaseUser | AnonymousUser, owner_field: str = "owner"
) -> QuerySet[ModelT]:
    """Limit ``queryset`` to what ``user`` may see. ``owner_field`` may traverse relations (``project__owner``)."""
    if not user.is_authenticated:
        return queryset.none()
    if getattr(user, "is_staff", False):
        return queryset
    return queryset.filter(**{owner_field: user})

"""The list filters of memory_app's endpoints as django-filter FilterSets, and the backend that applies them.

A FilterSet here is the query string's serializer: it declares the parameters (the OpenAPI schema reads them),
validates them, and narrows the queryset. A refused value is a 400 in the envelope whose ``details.fields`` names
the parameter, like every other refused input (``FilterBackend`` and ``filter_parameters`` raise it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request
from rest_framework.views import APIView

from memory_app.errors import ValidationFailed
from memory_app.models import Character, ContextMessage, HistoryRecord
from memory_app.selectors.history import HistoryFilters, history_filter_apply, history_filters_parse
from memory_app.selectors.projects import project_get


def filterset_validate(filterset: django_filters.FilterSet) -> dict[str, Any]:
    """The filterset's cleaned values, or a 400 naming every refused parameter.

    The message speaks of the first refused parameter: ``'name': reason``, or the filterset's own words for it
    (``refusal_messages``, formatted with the value sent) where the endpoint has always said it differently.
    """
    if filterset.is_valid():
        return filterset.form.cleaned_data
    errors = {name: [str(message) for message in messages] for name, messages in filterset.errors.items()}
    name, messages = next(iter(errors.items()))
    template = getattr(filterset, "refusal_messages", {}).get(name)
    data = filterset.data if filterset.data is not None else {}
    message = template.format(value=data.get(name)) if template else f"'{name}': {messages[0]}"
    raise ValidationFailed(message, details={"fields": errors})


def filter_parameters(filterset_class: type[django_filters.FilterSet], request: Request) -> dict[str, Any]:
    """The validated parameters of a view that does not list a queryset itself (a selector pages it)."""
    model = filterset_class._meta.model  # type: ignore[attr-defined]  # the metaclass sets _meta; the stubs omit it
    filterset = filterset_class(request.query_params, queryset=model._default_manager.none(), request=request)
    return filterset_validate(filterset)


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing a bad value with our envelope's message (``'name': reason``)."""

    def filter_queryset(self, request: HttpRequest, queryset: QuerySet[Any], view: APIView) -> QuerySet[Any]:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        filterset_validate(filterset)
        return filterset.qs


class TrueFalseField(forms.Field):
    """true/false as the API has always read it: 1/true/yes or 0/false/no (any case), absent or empty is false."""

    def to_python(self, value: Any) -> bool:
        raw = (value or "false").strip().lower()
        if raw in {"1", "true", "yes"}:
            return True
        if raw in {"0", "false", "no", ""}:
            return False
        raise forms.ValidationError("Must be true or false.", code="invalid")


class TrueFalseFilter(django_filters.Filter):
    field_class = TrueFalseField


# --- history --------------------------------------------------------------------------------------------------


class HistoryFilterForm(forms.Form):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The three are read together (the end must follow the start), by the selector every caller uses, from
        # the raw query string: the same values, the same first refusal.
        data: Mapping[str, Any] = self.data
        try:
            cleaned["filters"] = history_filters_parse(
                start_date=data.get("start_date"), end_date=data.get("end_date"), action_type=data.get("action_type")
            )
        except ValidationFailed as error:
            for name, messages in error.details["fields"].items():
                self.add_error(name if name in self.fields else None, messages)
        return cleaned


class HistoryFilterSet(django_filters.FilterSet):
    """start_date and end_date (inclusive; a date is its whole UTC day) and action_type (commas for several)."""

    start_date = django_filters.CharFilter(
        strip=False, help_text="ISO date or datetime (UTC when naive), inclusive", method="filter_history"
    )
    end_date = django_filters.CharFilter(
        strip=False, help_text="ISO date (the whole day) or datetime, inclusive", method="filter_history"
    )
    action_type = django_filters.CharFilter(
        strip=False, help_text="an action of the vocabulary; commas for several", method="filter_history"
    )

    class Meta:
        model = HistoryRecord
        fields: list[str] = []
        form = HistoryFilterForm

    def filter_history(self, queryset: QuerySet[HistoryRecord], name: str, value: str) -> QuerySet[HistoryRecord]:
        return queryset  # the three apply together, in filter_queryset

    def filter_queryset(self, queryset: QuerySet[HistoryRecord]) -> QuerySet[HistoryRecord]:
        return history_filter_apply(queryset=queryset, filters=self.form.cleaned_data["filters"])


def history_filters_from(request: Request) -> HistoryFilters:
    """The history filters of a request, as ``HistoryFilterSet`` validates them.

    Its form's only check is ``history_filters_parse`` on the raw values (``HistoryFilterForm.clean``), which is
    called here directly, with the same values, the same result and the same first refusal (a test holds the two
    to it): building the FilterSet's form, whose fields are deep-copied, cost more than the page's own query.
    """
    params = request.query_params
    return history_filters_parse(
        start_date=params.get("start_date"), end_date=params.get("end_date"), action_type=params.get("action_type")
    )


# --- characters -----------------------------------------------------------------------------------------------


class CharacterFilterSet(django_filters.FilterSet):
    project_id = django_filters.CharFilter(strip=False, method="filter_project_id", help_text="one of your projects")

    class Meta:
        model = Character
        fields: list[str] = []

    def filter_project_id(self, queryset: QuerySet[Character], name: str, value: str) -> QuerySet[Character]:
        # Resolved through the caller's own projects: 400 for a bad id, 404 for someone else's; staff get the one
        # project the id names (a 409 when several owners have it), never several owners' characters mixed.
        assert self.request is not None  # FilterBackend and filter_parameters always bind the request
        return queryset.filter(project=project_get(user=self.request.user, project_id=value))


# --- conversation contexts ------------------------------------------------------------------------------------


class ContextMessageFilterSet(django_filters.FilterSet):
    refusal_messages = {"include_archived": "'include_archived' must be true or false."}

    include_archived = TrueFalseFilter(
        method="filter_include_archived", help_text="Every stored message, not the window."
    )

    class Meta:
        model = ContextMessage
        fields: list[str] = []

    def filter_include_archived(
        self, queryset: QuerySet[ContextMessage], name: str, value: bool
    ) -> QuerySet[ContextMessage]:
        return queryset if value else queryset.filter(archived=False)

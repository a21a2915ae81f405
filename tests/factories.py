from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from memory_app.models import HistoryAction, HistoryRecord, Project


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pass-word-123")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    # The internal key equals the public id here, as for rows made before public ids existed; projects made
    # through project_create get a generated key.
    id = factory.Sequence(lambda n: f"proj-{n:03d}")
    public_id = factory.LazyAttribute(lambda project: project.id)
    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    description = ""


class HistoryRecordFactory(factory.django.DjangoModelFactory):
    """A record at a chosen time; production code writes through history_record(), which stamps now()."""

    class Meta:
        model = HistoryRecord

    project = factory.SubFactory(ProjectFactory)
    timestamp = factory.LazyFunction(timezone.now)
    action = HistoryAction.TEXT_ANALYZED.value
    summary = "Text analysed."
    details = factory.LazyFunction(dict)

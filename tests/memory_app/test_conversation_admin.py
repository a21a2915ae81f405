from __future__ import annotations

import pytest
from django.test import Client

from memory_app.services.conversation import NewMessage, context_append, context_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_for_staff(staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def test_admin_lists_searches_filters_and_shows_messages_inline(admin_client_for_staff, user, other_user):
    mine = context_create(owner=user, context_type="comic_generation")
    theirs = context_create(owner=other_user, context_type="general")
    context_append(context=mine, messages=NewMessage(role="user", content="an inline message"))

    by_owner = admin_client_for_staff.get("/admin/memory_app/conversationcontext/?q=alice")
    by_id = admin_client_for_staff.get(f"/admin/memory_app/conversationcontext/?q={theirs.id}")
    by_type = admin_client_for_staff.get("/admin/memory_app/conversationcontext/?context_type=general")
    detail = admin_client_for_staff.get(f"/admin/memory_app/conversationcontext/{mine.id}/change/")

    assert by_owner.status_code == by_id.status_code == by_type.status_code == detail.status_code == 200
    assert [c.pk for c in by_owner.context["cl"].result_list] == [mine.pk]
    assert [c.pk for c in by_id.context["cl"].result_list] == [theirs.pk]
    assert [c.pk for c in by_type.context["cl"].result_list] == [theirs.pk]
    assert "an inline message" in detail.content.decode()

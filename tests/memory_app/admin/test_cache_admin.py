from __future__ import annotations

import base64

import pytest
from django.test import Client

from memory_app.models import CacheEntry
from memory_app.services.cache import cache_set

pytestmark = pytest.mark.django_db

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def admin_client(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def images(cache_namespaces):
    cache_namespaces(images={"backend": "file", "ttl": 3600}, notes={"backend": "file", "ttl": 60})


def test_entries_listed_per_namespace_with_size_hits_and_expiry(admin_client, images):
    cache_set(namespace="images", key="cat", value=PNG, content_type="image/png")
    cache_set(namespace="notes", key="n", value={"a": 1})
    response = admin_client.get("/admin/memory_app/cacheentry/?namespace=images")
    assert response.status_code == 200
    assert [entry.namespace for entry in response.context["cl"].result_list] == ["images"]
    page = response.content.decode()
    for column in ("namespace", "short_key", "content_type", "size", "hit_count", "expires_at", "last_accessed_at"):
        assert f"column-{column}" in page
    assert f'<td class="field-size">{len(PNG)}B</td>' in page


def test_an_image_entry_shows_a_preview(admin_client, images):
    cache_set(namespace="images", key="cat", value=PNG, content_type="image/png")
    entry = CacheEntry.objects.get()
    page = admin_client.get(f"/admin/memory_app/cacheentry/{entry.pk}/change/").content.decode()
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page


def test_a_corrupted_image_is_not_previewed(admin_client, images, cache_root):
    cache_set(namespace="images", key="cat", value=PNG, content_type="image/png")
    entry = CacheEntry.objects.get()
    (cache_root / "images" / entry.blob_name[:2] / entry.blob_name).write_bytes(b"not a png")
    page = admin_client.get(f"/admin/memory_app/cacheentry/{entry.pk}/change/").content.decode()
    assert "(too large to preview, missing or corrupted)" in page
    assert "data:image/png" not in page

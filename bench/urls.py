"""The product's URLs plus the bare baseline endpoint, for the benchmarks only."""

from __future__ import annotations

from django.urls import path

from bench.views import BareInsertView
from comicmem_site.urls import handler404, handler500  # noqa: F401 - Django looks them up on the URLconf
from comicmem_site.urls import urlpatterns as product_urlpatterns

urlpatterns = [path("bench/bare-insert/", BareInsertView.as_view()), *product_urlpatterns]

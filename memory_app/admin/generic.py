"""Django's admin base classes, written with their model as a type parameter: ``ModelAdmin[Project]``.

django-stubs declares ``ModelAdmin`` and ``TabularInline`` generic in their models, but Django's own classes cannot
be subscripted at run time (``admin.ModelAdmin[Project]`` is a TypeError unless django_stubs_ext patches Django,
which this project does not). So mypy reads these names as the generic classes of the stubs, and at run time
``ModelAdmin[Project]`` is ``django.contrib.admin.ModelAdmin`` itself: the admin classes keep Django's own bases,
as DRF's serializers and views and Django's QuerySet do when subscripted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin

__all__ = ["ModelAdmin", "TabularInline"]

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin, TabularInline
else:

    class _Subscriptable:
        """``name[...]`` is the Django class it stands for."""

        def __init__(self, cls: type) -> None:
            self._cls = cls

        def __getitem__(self, parameters: Any) -> type:
            return self._cls

    ModelAdmin = _Subscriptable(admin.ModelAdmin)
    TabularInline = _Subscriptable(admin.TabularInline)

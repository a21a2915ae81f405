"""Project and style ids become per owner: the primary key stays as the internal key, a public id is added.

Existing rows keep their key (it was globally unique) and get it as their public id, so every foreign key,
storage folder and archive scope stays as it was; new rows get an opaque key.
"""

from __future__ import annotations

from django.db import migrations, models
from django.db.models import F

import memory_app.models.project


def copy_keys(apps, schema_editor) -> None:
    apps.get_model("memory_app", "Project").objects.update(public_id=F("id"))
    apps.get_model("memory_app", "StyleTemplate").objects.update(public_id=F("template_id"))


class Migration(migrations.Migration):
    dependencies = [("memory_app", "0012_ordering_by_foreign_key_columns")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="public_id",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="styletemplate",
            name="public_id",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        # Reversing leaves the column to be dropped by the AddField's reverse: nothing to undo here.
        migrations.RunPython(copy_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="public_id",
            field=models.CharField(max_length=64, validators=[memory_app.models.project.validate_project_id]),
        ),
        migrations.AlterField(
            model_name="project",
            name="id",
            field=models.CharField(
                default=memory_app.models.project.new_internal_key,
                max_length=64,
                primary_key=True,
                serialize=False,
                validators=[memory_app.models.project.validate_project_id],
            ),
        ),
        migrations.AlterField(
            model_name="styletemplate",
            name="template_id",
            field=models.CharField(
                default=memory_app.models.project.new_internal_key, max_length=64, primary_key=True, serialize=False
            ),
        ),
        migrations.AlterModelOptions(name="styletemplate", options={"ordering": ["public_id", "template_id"]}),
        migrations.AddConstraint(
            model_name="project",
            constraint=models.UniqueConstraint(fields=("owner", "public_id"), name="project_unique_public_id"),
        ),
        migrations.AddConstraint(
            model_name="styletemplate",
            constraint=models.UniqueConstraint(fields=("owner", "public_id"), name="style_unique_public_id"),
        ),
        migrations.AddConstraint(
            model_name="styletemplate",
            constraint=models.UniqueConstraint(
                condition=models.Q(("owner__isnull", True)),
                fields=("public_id",),
                name="style_unique_builtin_public_id",
            ),
        ),
    ]

"""Ship the built-in ``manga_shonen`` style template of seed §6.2."""

from __future__ import annotations

from django.db import migrations

MANGA_SHONEN = {
    "template_id": "manga_shonen",
    "name": "少年漫画风格",
    "prompt": "shonen manga style, bold clean line art, dynamic angles, close-up shots, halftone shading, vivid colors",
    "negative_prompt": "blurry, lowres, watermark, text artifacts, deformed hands, extra limbs, inconsistent character",
    "visual_parameters": {
        "line_style": "粗线条",
        "color_palette": ["#FF6B6B", "#4ECDC4", "#45B7D1"],
        "shading_style": "半色调",
        "composition_rules": ["动态角度", "特写镜头"],
    },
    "reference_examples": ["/styles/manga_shonen/ex_1.jpg", "/styles/manga_shonen/ex_2.jpg"],
}


def create(apps, schema_editor) -> None:
    StyleTemplate = apps.get_model("memory_app", "StyleTemplate")
    values = dict(MANGA_SHONEN)
    StyleTemplate.objects.update_or_create(template_id=values.pop("template_id"), defaults=values)


def remove(apps, schema_editor) -> None:
    apps.get_model("memory_app", "StyleTemplate").objects.filter(template_id="manga_shonen", owner=None).delete()


class Migration(migrations.Migration):
    dependencies = [("memory_app", "0009_creative_memory")]

    operations = [migrations.RunPython(create, remove)]

"""`manage.py diagnose` (§12.2) and `manage.py integrity_check [--repair]`."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from memory_app.models import ConversationContext, WorkflowState
from memory_app.providers import fonts
from memory_app.services import workflow as state
from memory_app.services.cache import cache_lookup, cache_set
from memory_app.services.conversation import context_create

pytestmark = pytest.mark.django_db


def set_memory(settings, section: str, **values) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={section: getattr(settings.MEMORY, section).model_copy(update=values)}
    )


@pytest.fixture
def calm(settings, cache_namespaces):
    cache_namespaces(
        text={"backend": "memory", "ttl": 60, "max_size": 10},
        images={"backend": "file", "ttl": 60, "directory": "img", "max_disk_usage": 1000},
    )
    # Whatever the machine's memory use, 100% is never passed.
    set_memory(settings, "monitoring", memory_threshold=1.0)


def diagnose(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("diagnose", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue()
    return 0, out.getvalue()


def test_a_healthy_system_exits_zero(calm):
    sha256 = fonts.renderer_identity().font_sha256 or ""

    code, output = diagnose()

    assert code == 0
    assert output.splitlines() == [
        "OK   active_contexts: 0 active contexts (limit 1000).",
        "OK   cache_memory: memory caches hold 0B (warning above 1.0GB).",
        "OK   hit_rate.text: text: hit rate 0.0% over 0 lookups (too few to judge, under 20).",
        "OK   hit_rate.images: images: hit rate 0.0% over 0 lookups (too few to judge, under 20).",
        "OK   disk_usage.images: images: 0B on disk of max_disk_usage 1000B (warning from 90%).",
        "OK   stuck_runs: 0 in_progress run(s) without progress for over 1800 s.",
        output.splitlines()[6],
        f"OK   font: lettering font: {fonts.packaged_font_path()} (sha256 {sha256[:12]}) covers the CJK sample.",
        "OK   embeddings: not configured; recall is lexical only.",
        "OK   providers: LLM provider offline, image provider offline: settings complete.",
        "0 warning(s).",
    ]
    assert output.splitlines()[6].startswith("OK   memory_usage: memory ")


def test_an_openai_provider_without_model_or_base_url_is_a_warning(calm, settings):
    from comicmem_site.memory_config import ProviderConfig

    providers = settings.MEMORY.providers.model_copy(update={"llm": ProviderConfig(provider="openai")})
    settings.MEMORY = settings.MEMORY.model_copy(update={"providers": providers})

    code, output = diagnose()

    assert code == 1
    lines = output.splitlines()
    assert "WARN providers.llm.model: LLM_PROVIDER=openai needs a model: set providers.llm.model (LLM_MODEL)." in lines
    assert any(line.startswith("WARN providers.llm.base_url: LLM_PROVIDER=openai needs a base URL") for line in lines)
    assert lines[-1] == "2 warning(s)."


def test_a_missing_lettering_font_is_a_warning(calm, monkeypatch):
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "comicmem_no_such_font_package")

    code, output = diagnose("--json")

    assert code == 1
    finding = next(finding for finding in json.loads(output)["findings"] if finding["check"] == "font")
    assert finding["warning"] is True
    assert finding["value"] is None
    assert "package comicmem_no_such_font_package is not installed" in finding["message"]


def test_each_seed_threshold_is_a_warning_and_the_exit_status_is_one(calm, settings, user, project):
    set_memory(settings, "conversation", max_active_contexts=1)
    set_memory(settings, "monitoring", cache_memory_warning=10)
    context_create(owner=user)
    context_create(owner=user)
    cache_set(namespace="text", key="a", value="x" * 50)
    for index in range(20):
        cache_lookup(namespace="text", key=f"missing-{index}")
    cache_set(namespace="images", key="big", value=b"p" * 950, content_type="image/png")
    run = state.workflow_create(workflow_type="t", project=project, owner=user, steps=["a"], data={}, preferences={})
    WorkflowState.objects.filter(pk=run.pk).update(updated_at=timezone.now() - dt.timedelta(hours=1))

    code, output = diagnose("--json")

    assert code == 1
    report = json.loads(output)
    warned = {finding["check"] for finding in report["findings"] if finding["warning"]}
    assert warned == {"active_contexts", "cache_memory", "hit_rate.text", "disk_usage.images", "stuck_runs"}
    assert report["warnings"] == 5
    stuck = next(finding for finding in report["findings"] if finding["check"] == "stuck_runs")
    assert (stuck["value"], stuck["threshold"]) == (1, 0)
    assert ConversationContext.objects.count() == 2  # diagnosing changes nothing


def test_integrity_check_reports_then_repairs(settings, cache_namespaces, cache_root, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")  # the check also reads the projects' files: none of other tests'
    cache_namespaces(images={"backend": "file", "ttl": 60, "directory": "img"})
    set_memory(settings, "cache_options", orphan_grace_seconds=0)
    stray = cache_root / "img" / "ab" / ("ab" * 32 + "-0123456789abcdef")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")

    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("integrity_check", stdout=out)
    assert exit_.value.code == 1
    assert out.getvalue().splitlines()[-2:] == [
        f"FOUND cache_blob_without_entry images:{stray.name}: no entry names it",
        "1 problem(s), 1 unrepaired. Run with --repair to fix what can be fixed.",
    ]
    assert stray.exists()

    out = io.StringIO()
    call_command("integrity_check", "--repair", stdout=out)
    assert out.getvalue().splitlines()[-2:] == [
        f"REPAIRED cache_blob_without_entry images:{stray.name}: no entry names it",
        "1 problem(s), 0 unrepaired.",
    ]
    assert not stray.exists()

    out = io.StringIO()
    call_command("integrity_check", "--json", stdout=out)
    assert json.loads(out.getvalue())["problems"] == []


def test_an_unreachable_cache_is_a_warning_not_a_crash(calm, monkeypatch):
    from memory_app.errors import ServiceUnavailable
    from memory_app.selectors import operations as selectors

    def down() -> dict:
        raise ServiceUnavailable("The shared cache is unreachable.")

    monkeypatch.setattr(selectors, "cache_statistics_list", down)

    code, output = diagnose()

    assert code == 1
    assert "WARN cache: the shared cache is unreachable: no cache figures." in output.splitlines()

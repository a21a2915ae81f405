"""API_THROTTLE_DISABLED: every rate out of reach for a local fuzzing run, honoured with DEBUG on only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.throttling import SimpleRateThrottle

from comicmem_site.settings.base import UNREACHABLE_RATE

REPO_ROOT = Path(__file__).resolve().parents[2]
PRINT_RATES = (
    "import django; django.setup()\n"
    "import json; from django.conf import settings\n"
    "print(json.dumps(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']))\n"
)


def _settings_of(tmp_path: Path, module: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{name: value for name, value in os.environ.items() if name not in {"API_THROTTLE_DISABLED", "DEBUG"}},
        "DJANGO_SETTINGS_MODULE": f"comicmem_site.settings.{module}",
        "COMICMEM_VAR_DIR": str(tmp_path),
        "SECRET_KEY": "x" * 60,
        "ALLOWED_HOSTS": "comics.example.com",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT_RATES], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_embedded_mode_lifts_every_rate_when_asked_and_keeps_them_otherwise(tmp_path):
    lifted = _settings_of(tmp_path, "local", API_THROTTLE_DISABLED="1")
    kept = _settings_of(tmp_path, "local")

    assert lifted.returncode == 0, lifted.stderr
    assert json.loads(lifted.stdout) == dict.fromkeys(["anon", "user", "auth", "login"], UNREACHABLE_RATE)
    assert json.loads(kept.stdout) == {"anon": "60/min", "user": "1200/min", "auth": "20/min", "login": "300/min"}


@pytest.mark.parametrize(("module", "variables"), [("local", {"DEBUG": "false"}), ("production", {})])
def test_without_debug_the_switch_stops_start_up_naming_it(tmp_path, module, variables):
    result = _settings_of(tmp_path, module, API_THROTTLE_DISABLED="1", **variables)

    assert result.returncode != 0
    assert "API_THROTTLE_DISABLED" in result.stderr and "DEBUG" in result.stderr


@pytest.mark.django_db
def test_at_the_unreachable_rate_requests_and_wrong_tokens_are_never_throttled(api_client, monkeypatch, settings):
    """The lifted rates take the same code paths as real ones: anonymous requests, and the wrong-token counter."""
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", dict.fromkeys(["anon", "user", "auth", "login"], UNREACHABLE_RATE)
    )

    answers = [
        api_client.get("/api/context/", HTTP_AUTHORIZATION=f"Token {index:040x}").status_code for index in range(60)
    ]
    answers += [api_client.get("/api/health/").status_code for _ in range(60)]

    assert 429 not in answers
    assert set(answers[:60]) == {401}

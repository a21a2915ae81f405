"""The operators' monitoring: Prometheus's configuration (promtool), the Grafana dashboard's queries against the
metrics the project exports, the provisioning that ties them together, and Flower's image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import memory_app.instruments as instruments
from memory_app.api.operations import SCRAPER_USERNAME
from memory_app.services.cache import cache_lookup, cache_set
from tests.conftest import service_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "comicmem.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "comicmem.yml"

# Each panel the operators asked for, and the series its queries must read.
REQUIRED_PANELS = {
    "Runs by status": {"comicmem_workflow_runs"},
    "Step durations (p50, p95)": {"comicmem_workflow_step_duration_seconds_bucket"},
    "Fan-out concurrency": {"comicmem_workflow_units_running"},
    "Cache hit rate": {"comicmem_cache_hits_total", "comicmem_cache_misses_total"},
    "API latency (p50, p95)": {"comicmem_http_request_duration_seconds_bucket"},
    "API errors": {"comicmem_http_requests_total"},
    "Queue depth": {"comicmem_queue_depth"},
}
# The sample names a family of each type exposes (prometheus-client's text format).
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
# PromQL words that look like names: grouping and set operators, modifiers.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or"}
PROMQL_KEYWORDS |= {"unless", "inf", "nan"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        service_unavailable("promtool is not installed (Debian's prometheus package: make sysdeps installs it as root)")
    assert path is not None
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) for every query of the dashboard."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: what is left once strings, label matchers, range and grouping
    lists, function names and keywords are taken away."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", expr):
        before = expr[match.start() - 1] if match.start() else " "
        after = expr[match.end() :].lstrip()[:1]
        # A number's exponent or fraction (1e3, 0.5) and a function call are not series.
        if before.isalnum() or before == "." or after == "(" or match.group() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_reads_the_series_of_a_query():
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{status=~"5..", x="y}"}[5m]))) '
        "/ ignoring (route) sum without (pod) (b_total offset 1h) > bool 1e3 and on (queue) c"
    )

    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


@pytest.mark.django_db
def test_every_dashboard_query_names_a_metric_the_project_exports(client, settings, cache_namespaces):
    # Given a request served and cache lookups made, so that the scrape holds their samples.
    cache_namespaces(text_analysis={"backend": "memory", "ttl": 60, "max_size": 10})
    cache_set(namespace="text_analysis", key="a", value="x")
    cache_lookup(namespace="text_analysis", key="a")
    cache_lookup(namespace="text_analysis", key="b")
    client.get("/api/health/")
    staff, _ = get_user_model().objects.get_or_create(username="dashboard-scraper", defaults={"is_staff": True})
    client.force_login(staff)

    # When /metrics is scraped for real.
    response = client.get("/metrics")

    # Then every series of every query is one of its families' samples, or of an instrument no process has
    # observed yet in this run (a labelled instrument exports nothing before its first observation).
    assert response.status_code == 200
    exported = set()
    families = list(text_string_to_metric_families(response.content.decode()))
    families += [
        family
        for instrument in vars(instruments).values()
        if isinstance(instrument, MetricWrapperBase)
        for family in instrument.describe()
    ]
    for family in families:
        exported |= {sample.name for sample in family.samples}
        exported |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
    assert {"comicmem_cache_hits_total", "comicmem_queue_depth", "comicmem_http_requests_total"} <= exported
    unknown = {(title, name) for title, expr in dashboard_queries() for name in metric_names(expr) - exported}
    assert unknown == set()


def test_the_dashboard_has_the_operators_panels_on_the_provisioned_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    [datasource] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    panels = {panel["title"]: panel for panel in dashboard["panels"]}

    assert len(panels) == len(dashboard["panels"])
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for title, series in REQUIRED_PANELS.items():
        assert title in panels, f"no panel {title!r}"
        read = set().union(*(metric_names(target["expr"]) for target in panels[title]["targets"]))
        assert series <= read, f"{title!r} reads {sorted(read)}"
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert {target["datasource"]["uid"] for target in panel["targets"]} == {datasource["uid"]}
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")


def test_prometheus_configuration_passes_promtool(tmp_path):
    tool = promtool()

    result = subprocess.run(
        [tool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    # The same check refuses a configuration with a mistake in it: it is a real check.
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_CONFIG.read_text().replace("scrape_interval: 15s", "scrape_interval: 15 seconds"))
    refused = subprocess.run([tool, "check", "config", str(broken)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path):
    tool = promtool()
    # promtool parses PromQL in rule files: each query becomes a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, (_, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True))

    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in result.stdout + result.stderr


def test_prometheus_scrapes_the_web_with_the_metrics_credential_and_every_worker_on_its_port():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    web = jobs["web"]
    assert web["static_configs"] == [{"targets": ["web:8000"]}]
    assert web["metrics_path"] == "/metrics"
    assert web["basic_auth"]["username"] == SCRAPER_USERNAME
    # The compose service writes METRICS_PASSWORD to the file the configuration names, on its data volume.
    entrypoint = " ".join(compose["services"]["prometheus"]["entrypoint"])
    assert f"> {web['basic_auth']['password_file']}" in entrypoint
    assert web["basic_auth"]["password_file"].startswith("/prometheus/")
    assert "prometheusdata:/prometheus" in compose["services"]["prometheus"]["volumes"]
    [workers] = jobs["worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert str(workers["port"]) == compose["services"]["worker"]["environment"]["WORKER_METRICS_PORT"]


def test_grafana_provisions_the_dashboard_folder_that_compose_mounts():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    volumes = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])

    assert volumes["./deploy/monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert volumes["./deploy/monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    environment = compose["services"]["grafana"]["environment"]
    assert environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{provider['options']['path']}/comicmem.json"


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_flower_is_pinned_in_its_own_image_with_the_workers_celery():
    app = requirement_pins(REPO_ROOT / "requirements.txt")
    flower = requirement_pins(REPO_ROOT / "deploy" / "flower" / "requirements.txt")

    assert "flower" in flower
    assert "flower" not in app  # not a dependency of the app
    for name in ("celery", "kombu", "redis"):
        assert flower[name] == app[name], name

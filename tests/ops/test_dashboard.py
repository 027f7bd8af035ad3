"""Grafana dashboard: valid JSON of a dashboard, and its queries use only exported metrics."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.kit.metrics import (
    ROOT,
    exposed_families,
    exposed_sample_names,
    promql_metric_names,
)

DASHBOARD = ROOT / "config" / "grafana" / "tickstream.json"

# What the operations team must see on it (issue 6): at least one panel per family.
REQUIRED = {
    "tickstream_ticks_total",
    "tickstream_ticks_invalid_total",
    "tickstream_ticks_conflated",
    "tickstream_http_requests_total",
    "tickstream_http_request_seconds_bucket",
    "tickstream_errors_total",
    "tickstream_db_pool_in_use",
    "tickstream_db_pool_waiting",
    "tickstream_db_pool_max",
    "tickstream_actor_restarts_total",
    "tickstream_actor_quarantines_total",
    "tickstream_orders_total",
    "tickstream_rate_limited_total",
    "tickstream_auth_failures_total",
    "tickstream_ws_connections",
    "tickstream_feed_stale",
    "tickstream_redis_reconnects",
}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels of collapsed rows
    return out


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_a_grafana_dashboard() -> None:
    """The file is a dashboard Grafana imports: uid, title, schema, laid-out panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_dashboard_queries_use_only_exported_metrics() -> None:
    """Every PromQL expression selects metrics that a real engine registry exports."""
    exported = exposed_sample_names(exposed_families())
    used: set[str] = set()
    for title, expr in _exprs(json.loads(DASHBOARD.read_text())):
        names = promql_metric_names(expr)
        assert names, title
        assert names <= exported, (title, sorted(names - exported))
        used |= names
    assert sorted(REQUIRED - used) == []


def test_unknown_metric_in_a_panel_is_detected() -> None:
    """A query on a metric the engine does not export (a counter without `_total`) is caught."""
    exported = exposed_sample_names(exposed_families())
    assert "tickstream_ticks_total" in exported
    assert "tickstream_ticks" not in exported
    assert "tickstream_http_request_seconds_bucket" in exported
    assert not promql_metric_names("sum(rate(tickstream_ticks[5m]))") <= exported


def test_every_query_is_scoped_by_the_job_and_instance_variables() -> None:
    """Each metric selector filters on $job and $instance, and both variables exist."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    exported = exposed_sample_names(exposed_families())
    for name in ("job", "instance"):
        query = variables[name]["query"]["query"]
        assert query.startswith("label_values(") and query.endswith(f", {name})")
        assert promql_metric_names(query[len("label_values(") : -len(f", {name})")]) <= exported
    for title, expr in _exprs(dashboard):
        selectors = re.findall(r"\btickstream_\w+(\{[^}]*\})?", expr)
        assert selectors, title
        for matchers in selectors:
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, title

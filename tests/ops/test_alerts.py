"""Alert rules: promtool accepts them, their unit tests pass, they name only real metrics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.kit.metrics import (
    ROOT,
    exposed_families,
    exposed_sample_names,
    promql_metric_names,
)

ALERTS = ROOT / "config" / "alerts.yml"
ALERTS_TEST = ROOT / "config" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/tools (run by .ci/services) installs it")
        pytest.skip("promtool is not installed: `bash .ci/tools` installs Debian's prometheus")
    return path


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _anchor(heading: str) -> str:
    # GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.integration
def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts config/alerts.yml."""
    out = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


@pytest.mark.integration
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """The synthetic series of config/alerts_test.yml fire (and spare) exactly what they expect:
    feed stale, restart storm, quarantine, auth-failure spike, pool exhaustion."""
    out = subprocess.run(
        [_promtool(), "test", "rules", ALERTS_TEST.name],
        cwd=ALERTS_TEST.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert {
        "TickstreamFeedStale",
        "TickstreamRestartStorm",
        "TickstreamAuthFailureSpike",
    } <= tested


@pytest.mark.integration
def test_promtool_unit_tests_can_fail(tmp_path: Any) -> None:
    """A rule made blind (threshold raised tenfold) fails its unit test: the tests bite."""
    blind = ALERTS.read_text().replace(
        "(increase(tickstream_actor_restarts_total[10m])) > 3",
        "(increase(tickstream_actor_restarts_total[10m])) > 30",
    )
    assert blind != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(blind)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    out = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "TickstreamRestartStorm" in out.stdout + out.stderr


def test_rules_use_only_exported_metrics() -> None:
    """Every metric an alert expression selects is one the engine exports."""
    exported = exposed_sample_names(exposed_families())
    for rule in _rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], sorted(names - exported))


def test_every_rule_is_annotated_and_has_a_runbook_section() -> None:
    """Each alert has summary, description and a runbook link to an existing RUNBOOK section."""
    headings = {
        _anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line[:1] == "#"
    }
    rules = _rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        path, _, anchor = notes["runbook"].partition("#")
        assert path == "docs/RUNBOOK.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in headings, f"docs/RUNBOOK.md has no section for {rule['alert']}"
        assert rule["labels"]["severity"] in {"critical", "warning"}


def test_promql_name_extraction() -> None:
    """The expression parser finds metric names and ignores functions, labels and keywords."""
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{route=~"/v1/x|y"}[5m])))'
        " > 0.25 and on (job) b_total offset 15m unless c or sum(rate(d[$__rate_interval]))"
        " by (code) / 1e-9"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c", "d"}

"""What the engine really exports at /metrics, and the metric names a PromQL expression uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from engine.config import Secret, load_config, with_overrides
from engine.runtime import build_runtime

ROOT: Final = Path(__file__).resolve().parents[2]

# The sample names Prometheus sees for one metric family, by type.
_SUFFIXES: Final = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}

# PromQL words that are not metric names (aggregations, operators, modifiers).
_KEYWORDS: Final = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
    ]
)


def exposed_registry() -> CollectorRegistry:
    """Return the metrics registry of an engine built exactly as ``tickstream serve`` builds it.

    Every actor and the gateway register their metrics in the engine's one ``Metrics()``
    registry at construction; nothing is started.
    """
    config = with_overrides(load_config(env={}), auth={"jwt_secret": Secret("k" * 48)})
    runtime = build_runtime(config, "postgresql://unused@127.0.0.1:1/unused")
    return runtime.engine.metrics.registry


def exposed_families() -> dict[str, str]:
    """Return ``{family: type}`` of every metric the engine registers."""
    return {m.name: m.type for m in exposed_registry().collect()}


def exposed_labels() -> dict[str, tuple[str, ...]]:
    """Return ``{family: label names}`` of every metric the engine registers.

    Label names of a metric that has no sample yet are not in the exposition, so they are
    read from the metric objects (prometheus_client's registry index).
    """
    registry = exposed_registry()
    index = registry._names_to_collectors  # noqa: SLF001 - the only place they are listed
    labels: dict[str, tuple[str, ...]] = {}
    for metric in registry.collect():
        collector = index.get(metric.name) or index.get(metric.name + "_total")
        labels[metric.name] = tuple(getattr(collector, "_labelnames", ()))
    return labels


def exposed_sample_names(families: dict[str, str]) -> set[str]:
    """Return the sample names a scrape can show for ``families`` (with type suffixes)."""
    return {name + suffix for name, kind in families.items() for suffix in _SUFFIXES[kind]}


def exposition_name(family: str, kind: str) -> str:
    """Return the name a metric is documented and queried by (counters carry ``_total``)."""
    return family + "_total" if kind == "counter" else family


def promql_metric_names(expr: str) -> set[str]:
    """Return the metric names ``expr`` selects (label matchers, grouping and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names

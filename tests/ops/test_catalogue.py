"""The README's metric catalogue lists exactly the metrics the engine registers."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from tests.kit.metrics import (
    ROOT,
    exposed_families,
    exposed_labels,
    exposed_registry,
    exposed_sample_names,
    exposition_name,
)

README = ROOT / "README.md"
ROW = re.compile(r"^\|\s*`(tickstream_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|\s*(\S[^|]*)\|\s*$")


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def catalogue(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Return ``{name: (type, labels)}`` of the rows of the README's "Metric catalogue"."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in _section(text, "Metric catalogue").splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels, _meaning = match.groups()
            assert name not in rows, f"{name} listed twice"
            rows[name] = (kind, tuple(x.strip() for x in labels.split(",") if x.strip()))
    return rows


def test_every_registered_metric_is_in_the_catalogue() -> None:
    """Each metric of a real engine registry has a row with its type and labels."""
    documented = catalogue(README.read_text())
    labels = exposed_labels()
    expected = {
        exposition_name(name, kind): (kind, labels[name])
        for name, kind in exposed_families().items()
    }
    missing = sorted(set(expected) - set(documented))
    assert missing == [], f"add these to README.md's Metric catalogue: {missing}"
    stale = sorted(set(documented) - set(expected))
    assert stale == [], f"README.md lists metrics the engine does not register: {stale}"
    for name, (kind, names) in expected.items():
        assert documented[name] == (kind, names), name


def test_catalogue_parser_sees_a_missing_row() -> None:
    """Dropping a row from the README text makes the catalogue miss exactly that metric."""
    text = README.read_text()
    full = catalogue(text)
    assert "tickstream_feed_stale" in full
    assert len(full) == len(exposed_families())
    cut = "\n".join(
        line for line in text.splitlines() if not line.startswith("| `tickstream_feed_stale`")
    )
    assert set(full) - set(catalogue(cut)) == {"tickstream_feed_stale"}


def test_suffixes_match_the_real_exposition() -> None:
    """The names the tests allow are those the /metrics text really declares."""
    text = generate_latest(exposed_registry()).decode()
    declared = [
        (name, kind)
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
        if not name.endswith("_created")  # creation stamps of unlabelled counters
    ]
    assert len(declared) == len(exposed_families())
    allowed = exposed_sample_names(exposed_families())
    for name, kind in declared:
        assert (name + "_bucket" if kind == "histogram" else name) in allowed, name
    assert ("tickstream_orders_total", "counter") in declared
    assert "tickstream_orders" not in allowed

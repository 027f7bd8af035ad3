"""Prometheus metrics owned by the engine context (no global registry).

Every metric name starts with ``tickstream_``. The catalogue grows with the
features; README.md lists it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import StoreStatistics
from .supervisor import EventKind, SupervisorEvent

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _PoolCollector(Collector):
    # Reads the pool's numbers at scrape time instead of mirroring them on every acquire.
    def __init__(self, source: Callable[[], StoreStatistics | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        if stats is None:
            return
        for name, doc, value in (
            ("tickstream_db_pool_size", "Connections open in the pool", stats.size),
            ("tickstream_db_pool_max", "Upper bound of the pool", stats.max_size),
            ("tickstream_db_pool_in_use", "Connections lent out", stats.in_use),
            ("tickstream_db_pool_waiting", "Units of work waiting for a connection", stats.waiting),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class _GaugeCollector(Collector):
    # Gauges read from a component at scrape time: (name, help, value) triples.
    def __init__(self, source: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for name, doc, value in self._source():
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """The engine's metrics, all in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "tickstream_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "tickstream_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("tickstream_errors", "Error answers by code", ["code"], registry=r)
        self.actor_restarts = Counter(
            "tickstream_actor_restarts",
            "Supervised children restarted",
            ["supervisor", "child"],
            registry=r,
        )
        self.supervisor_escalations = Counter(
            "tickstream_supervisor_escalations",
            "Supervisors that gave up and escalated",
            ["supervisor"],
            registry=r,
        )
        self.quarantines = Counter(
            "tickstream_actor_quarantines",
            "Children given up past their own restart budget",
            ["supervisor", "child"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "tickstream_dependency_up",
            "1 when the dependency answered the last readiness check",
            ["dependency"],
            registry=r,
        )
        self.auth_failures = Counter(
            "tickstream_auth_failures",
            "Authentication failures by reason",
            ["reason"],
            registry=r,
        )
        self.forbidden = Counter(
            "tickstream_forbidden",
            "Authenticated requests refused (scope or account)",
            ["kind"],
            registry=r,
        )
        self.orders = Counter(
            "tickstream_orders", "Order commands by outcome", ["outcome"], registry=r
        )
        self.rate_limited = Counter(
            "tickstream_rate_limited", "Requests refused by a rate limit", ["limit"], registry=r
        )
        self.ws_connections = Gauge(
            "tickstream_ws_connections", "Open WebSocket connections", registry=r
        )
        self.ws_closes = Counter(
            "tickstream_ws_closes",
            "WebSocket connections closed, by close code",
            ["code"],
            registry=r,
        )
        self.ws_malformed = Counter(
            "tickstream_ws_malformed_frames", "WebSocket frames that were not valid", registry=r
        )
        self.stream_subscriptions = Gauge(
            "tickstream_stream_subscriptions", "Open /ws/v1/stream subscriptions", registry=r
        )
        self.stream_subscribes = Counter(
            "tickstream_stream_subscribes",
            "Subscribe requests by outcome",
            ["outcome"],
            registry=r,
        )
        self.stream_events = Counter(
            "tickstream_stream_events",
            "Events offered to stream connections (one per subscriber)",
            registry=r,
        )
        self.stream_frames = Counter(
            "tickstream_stream_frames", "WebSocket frames written to stream clients", registry=r
        )
        self.stream_messages = Counter(
            "tickstream_stream_messages",
            "Messages written to stream clients (a batched frame carries several)",
            registry=r,
        )
        self.stream_conflated = Counter(
            "tickstream_stream_conflated",
            "Queued stream events replaced by a newer one before they were sent",
            registry=r,
        )
        self.stream_replayed = Counter(
            "tickstream_stream_replayed",
            "Events replayed on resume, by source",
            ["source"],
            registry=r,
        )
        self.stream_send_latency = Histogram(
            "tickstream_stream_send_seconds",
            "Time to write one frame to a stream client",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_reconnects = Gauge(
            "tickstream_redis_reconnects",
            "Times the Redis bus reader reconnected",
            registry=r,
        )

    def observe_supervisor(self, event: SupervisorEvent) -> None:
        """Count restarts, quarantines and escalations (a supervisor's ``on_event`` hook)."""
        if event.kind is EventKind.RESTARTED:
            self.actor_restarts.labels(event.supervisor, event.child_id).inc()
        elif event.kind is EventKind.GAVE_UP:
            self.quarantines.labels(event.supervisor, event.child_id).inc()
        elif event.kind is EventKind.ESCALATED:
            self.supervisor_escalations.labels(event.supervisor).inc()

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """Create a counter in this registry (components call it once, at construction)."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """Create a gauge in this registry."""
        return Gauge(name, doc, list(labels), registry=self.registry)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """Create a histogram in this registry."""
        return Histogram(name, doc, list(labels), buckets=buckets, registry=self.registry)

    def watch(self, source: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        """Export gauges that ``source`` reports at scrape time as (name, help, value)."""
        self.registry.register(_GaugeCollector(source))

    def watch_pool(self, source: Callable[[], StoreStatistics | None]) -> None:
        """Export the database pool's statistics, read from ``source`` at scrape time."""
        self.registry.register(_PoolCollector(source))

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

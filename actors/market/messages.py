"""Messages of the market actor, grouped by direction."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from protocol import Tick

# --------------------------------------------------------------- feeds -> market


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Validated ticks from one feed source, in the order the source produced them.

    Attributes:
        ticks: the ticks (already validated at the boundary).
        source: which feed produced them (``ws``, ``http``, ``redis``, ``simulator``,
            ``replay``), for metrics.
        received_ms: wall-clock epoch ms when the engine received the batch; the
            start of the ingest→account latency.
    """

    ticks: tuple[Tick, ...]
    source: str
    received_ms: int


class TickSink(Protocol):
    """Where feed actors deliver ticks: the market actor.

    ``submit`` waits while the market actor's mailbox is full (backpressure towards
    the feed), so a burst is never silently lost; it returns once the batch is queued.
    """

    async def submit(self, batch: TickBatch) -> None: ...


# --------------------------------------------------------------- market -> accounts, bus


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest market state of one symbol.

    ``received_ms`` is when the engine received the tick (wall clock): consumers
    measure ingest → account latency from it. It is not part of the wire quote.
    """

    symbol: str
    ltp: Decimal
    bid: Decimal | None
    ask: Decimal | None
    volume: int | None
    oi: int | None
    ts: int
    received_ms: int

    def to_wire(self) -> dict[str, object]:
        """Return the ``quotes:<SYMBOL>`` event data of PROTOCOL.md."""
        return {
            "symbol": self.symbol,
            "ltp": self.ltp,
            "bid": self.bid,
            "ask": self.ask,
            "volume": self.volume,
            "oi": self.oi,
            "ts": self.ts,
        }

"""Messages of the account actor, grouped by direction.

Every command carries a :class:`Reply`: the gateway waits on it, the actor answers
it once (a value or a :class:`~protocol.ProtocolError`). Commands are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import trio

from protocol import ErrorCode, OrderRequest, ProtocolError, TradeRequest

T = TypeVar("T")

OrderStatus = Literal["open", "partially_filled", "filled", "cancelled", "rejected"]


class Reply(Generic[T]):
    """A one-shot answer from the actor to the caller that sent a command."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: ProtocolError | None = None

    def set(self, value: T) -> None:
        """Answer with ``value`` (only the first answer counts)."""
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: ProtocolError) -> None:
        """Answer with an error (only the first answer counts)."""
        if not self._done.is_set():
            self._error = error
            self._done.set()

    @property
    def answered(self) -> bool:
        """Whether the actor has answered."""
        return self._done.is_set()

    async def wait(self) -> T:
        """Wait for the answer.

        Raises:
            ProtocolError: the actor's refusal.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def unavailable() -> ProtocolError:
    """The error for a command the actor could not finish (it stopped or restarted)."""
    return ProtocolError(ErrorCode.BUSY, "account actor unavailable; retry")


# --------------------------------------------------------------- gateway -> account


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place an order; ``request_hash`` identifies the body for Idempotency-Key reuse."""

    request: OrderRequest
    idempotency_key: str | None
    request_hash: str
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel an open order."""

    order_id: str
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class RecordTrade:
    """Record a broker trade, idempotent on ``external_id``."""

    trade: TradeRequest
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetOrders:
    """List orders, newest first (``order_id`` set: that one order)."""

    order_id: str | None = None
    limit: int = 100
    reply: Reply[object] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetPositions:
    """Return every position of the day (closed ones included)."""

    reply: Reply[list[dict[str, object]]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetPnl:
    """Return the account P&L."""

    reply: Reply[dict[str, str]] = field(default_factory=Reply)


Command = PlaceOrder | CancelOrder | RecordTrade | GetOrders | GetPositions | GetPnl

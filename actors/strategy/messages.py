"""Messages of the strategy actor, grouped by direction.

Every command carries a :class:`~actors.account.messages.Reply` (the same one-shot the
account actor uses): the gateway waits on it, the actor answers it once, with a value
or a :class:`~protocol.ProtocolError`. Commands carry validated input only (the
gateway validates with :mod:`.model`), and are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from actors.account.messages import Reply
from protocol import ErrorCode, ProtocolError

from .model import Leg, PayoffGrid

SortField = Literal["name", "created_ts", "m2m"]
SortOrder = Literal["asc", "desc"]


def unavailable() -> ProtocolError:
    """The error for a command the actor could not finish (it stopped or restarted)."""
    return ProtocolError(ErrorCode.BUSY, "strategy actor unavailable; retry", retry_after=1)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated list request: a whitelisted sort field, an order and a page."""

    sort: SortField = "created_ts"
    order: SortOrder = "asc"
    limit: int = 100
    offset: int = 0


# --------------------------------------------------------------- gateway -> strategies


@dataclass(frozen=True, slots=True)
class CreateStrategy:
    """Create a strategy on ``account``; answers the strategy object."""

    account: str
    name: str
    legs: tuple[Leg, ...]
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class ListStrategies:
    """One page of the account's strategies: ``{"items", "total", "limit", "offset"}``."""

    account: str
    query: ListQuery = ListQuery()
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetStrategy:
    """One strategy of the account (404 when it is not the account's)."""

    account: str
    strategy_id: str
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class PatchStrategy:
    """Replace the name and/or the legs (None: keep)."""

    account: str
    strategy_id: str
    name: str | None
    legs: tuple[Leg, ...] | None
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class DeleteStrategy:
    """Delete a strategy; answers None."""

    account: str
    strategy_id: str
    reply: Reply[None] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetPayoff:
    """The payoff at expiry over ``grid``: ``{"points": [{"underlying", "value"}]}``."""

    account: str
    strategy_id: str
    grid: PayoffGrid
    reply: Reply[dict[str, object]] = field(default_factory=Reply)


Command = CreateStrategy | ListStrategies | GetStrategy | PatchStrategy | DeleteStrategy | GetPayoff

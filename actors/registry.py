"""The running actors the edge talks to (through their mailboxes and read views)."""

from __future__ import annotations

from dataclasses import dataclass

from .account.supervisor import Accounts
from .connection.hub import StreamHub
from .market.actor import MarketActor
from .strategy.actor import StrategyActor


@dataclass(frozen=True, slots=True)
class Actors:
    """Handles on the engine's actors, built in ``main`` and passed to the gateway."""

    market: MarketActor
    accounts: Accounts
    strategies: StrategyActor
    stream: StreamHub | None = None

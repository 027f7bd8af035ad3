"""A running stream hub over whatever ``engine`` fixture the test module defines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from actors.account.supervisor import Accounts
from actors.connection.hub import StreamHub
from actors.connection.snapshots import Snapshots
from actors.market.actor import MarketActor
from actors.market.instruments import InstrumentMaster
from engine.calendar import load_calendar
from engine.context import Engine


class KnownAccounts(Accounts):
    """The account supervisor's lookup, answering for ACC1 without running an actor."""

    def get(self, account_id: str) -> Any:
        return object() if account_id == "ACC1" else None


@pytest.fixture
async def hub(engine: Engine) -> AsyncIterator[StreamHub]:
    """A running hub over an idle market actor; ACC1 exists, without an actor."""
    market = MarketActor(engine, InstrumentMaster(engine.store), load_calendar())
    hub = StreamHub(engine, Snapshots(engine, market, KnownAccounts(engine, market), None))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield hub
        nursery.cancel_scope.cancel()

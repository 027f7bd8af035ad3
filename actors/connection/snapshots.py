"""What a stream subscription starts from: channel snapshots and ledger replays.

Market channels read the market actor's state (quotes, candles, chains); account channels
ask the account's actor through its mailbox (positions, P&L) or the strategy actor; the
orders channel and every replay beyond the hub's retention read the PostgreSQL ledger.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import trio

import protocol
from engine.config import StreamConfig
from engine.context import Engine
from engine.mailbox import MailboxClosed, MailboxFull
from protocol import Channel, ChannelKind, ErrorCode, ProtocolError

from ..account.ledger import order_wire
from ..account.messages import GetPnl, GetPositions
from ..account.supervisor import Accounts
from ..market.actor import MarketActor
from ..market.chain import chain_snapshot
from ..market.live import UniverseCache
from ..strategy.actor import StrategyActor
from ..strategy.messages import ListQuery, ListStrategies

STRATEGY_PAGE: Final = 500
# One statement, one snapshot: the open orders and the last seq they reflect (a row of
# NULL order columns when there is no open order).
LOAD_ORDERS_SNAPSHOT: Final = """
WITH last AS (SELECT coalesce(max(seq), 0) AS last_seq FROM order_events WHERE account_id = $1)
SELECT last.last_seq, o.* FROM last LEFT JOIN orders o
    ON o.account_id = $1 AND o.status IN ('open', 'partially_filled')
ORDER BY o.created_ts, o.id
"""
LOAD_EVENTS: Final = (
    "SELECT seq, payload FROM order_events WHERE account_id = $1 AND seq > $2 AND seq <= $3"
    " ORDER BY seq LIMIT $4"
)


class Snapshots:
    """The read side the hub opens subscriptions with (one per hub)."""

    def __init__(
        self,
        engine: Engine,
        market: MarketActor,
        accounts: Accounts,
        strategies: StrategyActor | None,
    ) -> None:
        self._engine = engine
        self._config: StreamConfig = engine.config.stream
        self._market = market
        self._accounts = accounts
        self._strategies = strategies
        self._universes = UniverseCache(market.master)

    def has_account(self, account: str) -> bool:
        """Return whether ``account`` is one the engine runs."""
        return self._accounts.get(account) is not None

    async def snapshot(self, channel: Channel) -> object:
        """Return the ``snapshot`` of a conflated channel's ``subscribed`` frame.

        Raises:
            ProtocolError: ``not_found`` (no such account), ``busy`` (its actor did not
                answer in time).
        """
        market = self._market
        kind = channel.kind
        if kind is ChannelKind.QUOTES:
            quote = market.quote(channel.key)
            await trio.lowlevel.checkpoint()
            return None if quote is None else quote.to_wire()
        if kind is ChannelKind.CANDLES:
            await trio.lowlevel.checkpoint()
            book = market.candles(channel.key)
            assert channel.tf is not None  # noqa: S101 - parse_channel sets it for candles
            if book is None:
                return {"forming": None, "last_closed": None}
            forming, closed = book.forming(channel.tf), book.last_closed(channel.tf)  # type: ignore[arg-type]
            return {
                "forming": None if forming is None else forming.to_wire(),
                "last_closed": None if closed is None else closed.to_wire(),
            }
        if kind is ChannelKind.CHAIN:
            assert channel.expiry is not None  # noqa: S101 - parse_channel sets it for chains
            await trio.lowlevel.checkpoint()
            snap = chain_snapshot(
                market, channel.key, channel.expiry, self._engine.clock(), self._universes.get()
            )
            return None if snap is None else snap.to_wire()
        return await self._account_snapshot(channel)

    async def _account_snapshot(self, channel: Channel) -> object:
        account = channel.key
        if channel.kind is ChannelKind.STRATEGIES:
            if self._strategies is None:
                return {"items": []}
            page = ListStrategies(account, ListQuery(limit=STRATEGY_PAGE))
            return await self._ask(self._strategies.mailbox, page, page.reply)
        handle = self._accounts.get(account)
        if handle is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": account})
        if channel.kind is ChannelKind.PNL:
            pnl = GetPnl()
            return await self._ask(handle.mailbox, pnl, pnl.reply)
        positions = GetPositions()
        return {"items": await self._ask(handle.mailbox, positions, positions.reply)}

    async def _ask(self, mailbox: Any, command: Any, reply: Any) -> Any:
        try:
            mailbox.send_nowait(command)
        except (MailboxFull, MailboxClosed):
            raise ProtocolError(
                ErrorCode.BUSY, "actor busy; subscribe again", retry_after=1
            ) from None
        with trio.move_on_after(self._engine.config.accounts.reply_timeout):
            return await reply.wait()
        raise ProtocolError(ErrorCode.BUSY, "actor did not answer in time", retry_after=1)

    async def orders(self, account: str) -> tuple[int, list[dict[str, object]]]:
        """Return the last seq of ``account``'s orders channel and its open orders."""
        rows = await self._engine.store.fetch(LOAD_ORDERS_SNAPSHOT, account)
        last = int(rows[0]["last_seq"]) if rows else 0
        return last, [order_wire(r) for r in rows if r["id"] is not None]

    async def ledger_events(
        self, channel: Channel, after: int, upto: int
    ) -> list[tuple[int, bytes]]:
        """Return the ledger's events ``after < seq <= upto`` of an orders channel, as
        ``(seq, encoded data)``; none when more than ``stream.replay_max`` are missing."""
        limit = min(upto - after, self._config.replay_max + 1)
        if limit <= 0:
            return []
        rows = await self._engine.store.fetch(LOAD_EVENTS, channel.key, after, upto, limit)
        if len(rows) > self._config.replay_max:
            return []
        # NOTE: jsonb text is re-encoded so a replayed frame equals the live one.
        return [(int(r["seq"]), protocol.dumps(orjson.loads(r["payload"]))) for r in rows]

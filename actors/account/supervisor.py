"""The account supervisor: one actor per account, and quarantine instead of escalation.

Each account child has its own restart budget (``accounts.max_restarts`` within
``accounts.restart_period``). Past it, that account alone is quarantined: it stays
down, new orders answer 409 ``account_halted``, a metric and a log event are raised,
and every other account keeps running. ``restart`` revives it.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from actors.market.actor import MarketActor
from engine.context import Engine
from engine.mailbox import Mailbox
from engine.store import StoreError
from engine.supervisor import ChildSpec, ChildStartError, Restart, Strategy, Supervisor
from protocol import ErrorCode, ProtocolError

from .actor import AccountActor, AccountHandle
from .messages import Command, unavailable

LOG = logging.getLogger(__name__)

# NOTE: the per-account budgets decide quarantine; the supervisor's own budget is
# only a backstop against a storm across all accounts (e.g. the database gone).
SUPERVISOR_INTENSITY: Final = 1000
SUPERVISOR_PERIOD: Final = 60.0  # seconds
ACTOR_SHUTDOWN: Final = 5.0  # seconds
LIST_ACTIVE: Final = "SELECT id, status FROM accounts ORDER BY id"
INSERT_ACCOUNT: Final = (
    "INSERT INTO accounts (id, name, status, created_ts) VALUES ($1, $2, 'active', $3)"
)
LIST_ACCOUNTS: Final = "SELECT id, name, status, created_ts FROM accounts ORDER BY id"
SET_STATUS: Final = "UPDATE accounts SET status = $2 WHERE id = $1"


class Accounts:
    """Handles of every account and the supervisor running their actors."""

    def __init__(self, engine: Engine, market: MarketActor) -> None:
        self._engine = engine
        self._market = market
        self._handles: dict[str, AccountHandle] = {}
        # NOTE: ops restarts and halts run one at a time: a rebuild reads the halt from
        # the table, and a halt written between that read and its use would be undone.
        self._ops = trio.Lock()
        self.supervisor = Supervisor(
            "accounts",
            [],
            strategy=Strategy.ONE_FOR_ONE,
            intensity=SUPERVISOR_INTENSITY,
            period=SUPERVISOR_PERIOD,
            on_event=engine.metrics.observe_supervisor,
        )

    def get(self, account_id: str) -> AccountHandle | None:
        """Return the handle of an account, or None."""
        return self._handles.get(account_id)

    def handles(self) -> list[AccountHandle]:
        """Return every handle, sorted by account id."""
        return [self._handles[k] for k in sorted(self._handles)]

    async def run(
        self, *, task_status: trio.TaskStatus[Accounts] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the supervisor and one actor per account, then supervise until cancelled."""
        rows = await self._engine.store.fetch(LIST_ACTIVE)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run)
            for row in rows:
                await self._start(row["id"])
            LOG.info("%d account actors started", len(rows))
            task_status.started(self)

    async def create(self, account_id: str, name: str) -> dict[str, object]:
        """Insert an account and start its actor.

        Raises:
            ProtocolError: ``duplicate`` (409) when the id exists.
        """
        now = self._engine.clock()
        try:
            await self._engine.store.execute(INSERT_ACCOUNT, account_id, name, now)
        except StoreError as exc:
            if exc.is_unique_violation:
                raise ProtocolError(
                    ErrorCode.DUPLICATE, "account exists", {"account": account_id}
                ) from None
            raise
        await self._start(account_id)
        return {"id": account_id, "name": name, "status": "active", "created_ts": now}

    async def list(self) -> list[dict[str, object]]:
        """Return every account row with its live state."""
        rows = await self._engine.store.fetch(LIST_ACCOUNTS)
        out = []
        for row in rows:
            handle = self._handles.get(row["id"])
            out.append(
                {
                    "id": row["id"],
                    "name": row["name"],
                    "status": row["status"],
                    "state": handle.state if handle else "stopped",
                    "halted": handle.halted if handle else row["status"] == "halted",
                    "created_ts": row["created_ts"],
                }
            )
        return out

    async def restart(self, account_id: str) -> None:
        """Restart one account's actor through the supervisor (also ends a quarantine).

        Raises:
            ProtocolError: ``not_found``; ``account_halted`` when it fails to start again.
        """
        handle = self._handles.get(account_id)
        if handle is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": account_id})
        try:
            async with self._ops:
                await self.supervisor.restart_child(account_id)
        except ChildStartError as exc:
            self._engine.metrics.quarantines.labels("accounts", account_id).inc()
            self._quarantine(account_id, exc.__cause__)
            raise ProtocolError(
                ErrorCode.ACCOUNT_HALTED,
                "account could not restart and is quarantined",
                {"account": account_id},
            ) from None

    async def set_halted(self, account_id: str, halted: bool) -> None:
        """Halt (kill switch) or resume one account, persisted in ``accounts.status``.

        A halted account refuses new orders with 409 ``account_halted``; its actor keeps
        running with its state, and a restart reads the halt back from the table.

        Raises:
            ProtocolError: ``not_found``.
        """
        handle = self._handles.get(account_id)
        if handle is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": account_id})
        async with self._ops:
            # NOTE: the row first: a halt that failed to persist must not look applied.
            status = "halted" if halted else "active"
            await self._engine.store.execute(SET_STATUS, account_id, status)
            handle.halted = halted
        LOG.warning("account %s %s", account_id, "halted" if halted else "resumed")

    async def _start(self, account_id: str) -> None:
        handle = self._handles.get(account_id)
        if handle is None:
            capacity = self._engine.config.mailbox.command_capacity
            handle = AccountHandle(account_id, Mailbox(capacity, name=f"account:{account_id}"))
            self._handles[account_id] = handle
        cfg = self._engine.config.accounts

        async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            actor = AccountActor(self._engine, handle, self._market)
            await actor.run(task_status=task_status)

        spec = ChildSpec(
            account_id,
            start,
            restart=Restart.TRANSIENT,
            shutdown=ACTOR_SHUTDOWN,
            max_restarts=cfg.max_restarts,
            max_period=cfg.restart_period,
            on_give_up=self._quarantine,
        )
        try:
            await self.supervisor.start_child(spec)
        except ChildStartError as exc:
            # An account that cannot even rebuild stays down; every other account runs.
            # (A give-up after restarts is counted by the supervisor's event hook.)
            self._engine.metrics.quarantines.labels("accounts", account_id).inc()
            self._quarantine(account_id, exc.__cause__)

    def _quarantine(self, account_id: str, error: BaseException | None) -> None:
        handle = self._handles[account_id]
        handle.state = "quarantined"
        LOG.error(
            "account %s quarantined after repeated crashes (last error: %r)", account_id, error
        )
        # Commands queued for the dead actor are answered, not left hanging.
        while True:
            try:
                command: Command = handle.mailbox.receive_nowait()
            except (trio.WouldBlock, Exception):
                break
            command.reply.fail(unavailable())

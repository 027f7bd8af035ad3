"""The control actor: executes validated ops commands against the running actors.

It talks to the other actors through their handles and supervisors only (the account
supervisor restarts and halts accounts, the market actor pauses its feed, the stream
hub's registry lists and kicks connections). Every command, executed or refused, is
counted, logged as a security event and written to the audit log by :meth:`Controller.audit`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import orjson

from actors.connection.actor import KICKED
from actors.registry import Actors
from engine.context import Engine
from engine.logs import set_level
from protocol import COMMANDS, ControlCommand, ErrorCode, ProtocolError

from . import audit

LOG = logging.getLogger(__name__)
SECURITY_LOG = logging.getLogger("tickstream.security")
MAX_AUDIT_ARGS: Final = 1000  # bytes of refused arguments kept verbatim in the audit log
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's result data, and what to do once the result has been sent."""

    data: object
    then: Callable[[], None] | None = None


class Controller:
    """Executes ``/ws/v1/control`` commands (one per engine)."""

    def __init__(self, engine: Engine, actors: Actors) -> None:
        self._engine = engine
        self._actors = actors
        self._counted = engine.metrics.counter(
            "tickstream_control_commands",
            "Control channel commands by cmd and outcome",
            ["cmd", "ok"],
        )

    async def execute(self, command: ControlCommand) -> Outcome:
        """Run one validated command.

        Raises:
            ProtocolError: the command failed (``not_found``, ``account_halted`` ...).
        """
        actors = self._actors
        match command.cmd:
            case "stats":
                return Outcome(self.stats())
            case "accounts.list":
                return Outcome({"items": await actors.accounts.list()})
            case "account.restart":
                account = _given(command.account)
                await actors.accounts.restart(account)
                return Outcome({"account": account, "restarted": True})
            case "account.halt" | "account.resume":
                account = _given(command.account)
                halted = command.cmd == "account.halt"
                await actors.accounts.set_halted(account, halted)
                return Outcome({"account": account, "halted": halted})
            case "feed.pause":
                actors.market.pause()
                return Outcome({"paused": True})
            case "feed.resume":
                actors.market.resume()
                return Outcome({"paused": False})
            case "connections.list":
                hub = actors.stream
                conns = (
                    [] if hub is None else [c.info().to_wire() for c in hub.registry.connections()]
                )
                return Outcome({"items": conns})
            case "connection.kick":
                return Outcome(*self._kick(_given(command.connection)))
            case "engine.drain":
                # NOTE: set after the result is sent: draining closes this socket too.
                return Outcome({"draining": True}, self._engine.lifecycle.draining.set)
            case "log.level":
                level = _given(command.level)
                previous = logging.getLevelName(logging.getLogger().level)
                set_level(level)
                return Outcome({"level": level, "previous": previous})
            case _:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown command {command.cmd}")

    def _kick(self, conn_id: int) -> tuple[object, Callable[[], None]]:
        hub = self._actors.stream
        conn = None if hub is None else hub.registry.get(conn_id)
        if conn is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such connection", {"connection": conn_id})
        return {"connection": conn_id, "kicked": True, "close_code": KICKED}, conn.kick

    def stats(self) -> dict[str, object]:
        """Return live counts of connections, queues, accounts, the feed and the bus."""
        engine, actors = self._engine, self._actors
        sample = engine.metrics.registry.get_sample_value
        conns = [] if actors.stream is None else actors.stream.registry.connections()
        infos = [c.info() for c in conns]
        queued = [i.queued for i in infos]
        handles = actors.accounts.handles()
        market = actors.market.statistics()
        return {
            "draining": engine.lifecycle.draining.is_set(),
            "ws_connections": int(sample("tickstream_ws_connections") or 0),
            "stream": {
                "connections": len(infos),
                "subscriptions": sum(i.subscriptions for i in infos),
                "channels": 0 if actors.stream is None else actors.stream.channels,
                "events": 0 if actors.stream is None else actors.stream.events,
                "queued": sum(queued),
                "queued_max": max(queued, default=0),
            },
            "accounts": {
                "total": len(handles),
                "by_state": dict(collections.Counter(h.state for h in handles)),
                "halted": sum(1 for h in handles if h.halted),
                "mailbox_depth": sum(h.mailbox.statistics().depth for h in handles),
            },
            "feed": {
                **actors.market.health().to_wire(),
                "ticks": market.ticks,
                "paused_ticks": market.paused_ticks,
                "inbox_depth": market.inbox_depth,
            },
            "bus": dataclasses.asdict(engine.bus.statistics()),
        }

    async def audit(
        self, sub: str, cmd: str, args: object, ok: bool, error: str | None = None
    ) -> None:
        """Count, log (security event) and write one command to the audit log.

        Error handling: a failed audit write propagates (the caller answers an error).
        """
        cmd = cmd[:64]
        # Unknown commands share one label: a client cannot grow the label set.
        self._counted.labels(cmd if cmd in COMMANDS else "unknown", str(ok).lower()).inc()
        # WARNING like every security event: lowering the log level must not hide them.
        SECURITY_LOG.warning(
            "security event: admin command",
            extra={"sub": sub, "cmd": cmd, "ok": ok, "error": error},
        )
        await audit.record(
            self._engine.store,
            ts=self._engine.clock(),
            sub=sub,
            cmd=cmd,
            args=_audited(args),
            ok=ok,
            error=error,
        )


def _given(value: T | None) -> T:
    # parse_control_frame guarantees the argument; a None here is a table mismatch.
    if value is None:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "missing argument")
    return value


def _audited(args: object) -> dict[str, object]:
    if not isinstance(args, dict):
        return {} if args is None else {"invalid": str(type(args).__name__)}
    try:
        encoded = orjson.dumps(args)
    except TypeError:
        return {"invalid": "not JSON"}
    if len(encoded) > MAX_AUDIT_ARGS:
        return {"truncated": True}
    out: dict[str, object] = orjson.loads(encoded)
    return out

"""The stream connections of this node, by id, for the control channel.

Ids are small integers, never reused while the node runs, so an operator who read
``connections.list`` cannot kick a newer connection that took an old one's place.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One line of ``connections.list``."""

    id: int
    sub: str
    remote: str | None
    subscriptions: int
    queued: int  # frames waiting in the connection's outbox

    def to_wire(self) -> dict[str, object]:
        """Return ``{id, sub, remote, subscriptions, queued}``."""
        return asdict(self)


class Listed(Protocol):
    """What the registry needs of a connection."""

    def info(self) -> ConnectionInfo:
        """Return the connection's id, subject, address, subscriptions and queue depth."""
        ...

    def kick(self) -> None:
        """Close the connection (without waiting)."""
        ...


class ConnectionRegistry:
    """Open stream connections by id (one registry per hub)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._open: dict[int, Listed] = {}

    def register(self, conn: Listed) -> int:
        """Add ``conn``; return its id."""
        conn_id = next(self._ids)
        self._open[conn_id] = conn
        return conn_id

    def unregister(self, conn_id: int) -> None:
        """Forget a connection (idempotent)."""
        self._open.pop(conn_id, None)

    def get(self, conn_id: int) -> Listed | None:
        """Return the open connection ``conn_id``, or None."""
        return self._open.get(conn_id)

    def connections(self) -> list[Listed]:
        """Return the open connections, oldest first."""
        return [self._open[k] for k in sorted(self._open)]

    def __len__(self) -> int:
        return len(self._open)

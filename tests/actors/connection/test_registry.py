"""The stream connection registry the control channel lists and kicks through."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.connection.registry import ConnectionInfo, ConnectionRegistry


@dataclass
class FakeConnection:
    """A connection that records kicks."""

    sub: str
    id: int = 0
    kicked: list[bool] = field(default_factory=list)

    def info(self) -> ConnectionInfo:
        """The listing line of this fake."""
        return ConnectionInfo(self.id, self.sub, "127.0.0.1:1", 2, 3)

    def kick(self) -> None:
        """Record the kick."""
        self.kicked.append(True)


def test_ids_are_increasing_and_never_reused() -> None:
    """A connection that replaces a closed one gets a new id, so a stale kick misses."""
    registry = ConnectionRegistry()
    a, b = FakeConnection("a"), FakeConnection("b")
    a.id, b.id = registry.register(a), registry.register(b)
    assert (a.id, b.id) == (1, 2)
    registry.unregister(a.id)
    c = FakeConnection("c")
    c.id = registry.register(c)
    assert c.id == 3
    assert registry.get(a.id) is None
    assert [x.info().sub for x in registry.connections()] == ["b", "c"]
    assert len(registry) == 2


def test_unregister_is_idempotent_and_get_finds_open_ones() -> None:
    """Unregistering twice is harmless; get returns the very connection registered."""
    registry = ConnectionRegistry()
    conn = FakeConnection("x")
    conn.id = registry.register(conn)
    found = registry.get(conn.id)
    assert found is conn
    found.kick()
    assert conn.kicked == [True]
    registry.unregister(conn.id)
    registry.unregister(conn.id)
    assert registry.connections() == []


def test_info_wire_shape() -> None:
    """``to_wire`` gives exactly the fields PROTOCOL.md lists for connections.list."""
    wire = ConnectionInfo(4, "alice", None, 1, 0).to_wire()
    assert wire == {"id": 4, "sub": "alice", "remote": None, "subscriptions": 1, "queued": 0}

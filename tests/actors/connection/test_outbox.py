"""The outbound queue of one stream connection: lossless bound, latest-value keys, order."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors.connection.outbox import Outbox, SlowConsumer


def test_lossless_frames_are_bounded_by_capacity_and_never_dropped() -> None:
    """The frame past ``capacity`` raises SlowConsumer; nothing queued is lost."""
    box = Outbox(3)
    for i in range(3):
        box.put(b"%d" % i)
    with pytest.raises(SlowConsumer):
        box.put(b"3")
    assert len(box) == 3 and box.lossless_queued == 3


def test_latest_value_replaces_and_moves_to_the_end() -> None:
    """A newer value of a key replaces the queued one and leaves after the others."""
    box = Outbox(10)
    box.put_latest("quotes:A", b"a1")
    box.put(b"order-1")
    box.put_latest("quotes:B", b"b1")
    box.put_latest("quotes:A", b"a2")
    assert box.conflated == 1
    frames = trio.run(box.take_all)
    assert frames == [b"order-1", b"b1", b"a2"]


def test_latest_values_do_not_count_against_capacity() -> None:
    """Keys are bounded by the subscriptions, not by ``capacity``."""
    box = Outbox(1)
    for i in range(100):
        box.put_latest(("positions", i), b"x")
    box.put(b"reply")
    assert len(box) == 101 and box.lossless_queued == 1


def test_integer_keys_are_refused() -> None:
    """Integers are the lossless entries' own keys."""
    with pytest.raises(TypeError):
        Outbox(1).put_latest(7, b"x")
    with pytest.raises(ValueError, match="capacity"):
        Outbox(0)


async def test_take_all_waits_for_frames_and_ends_after_close() -> None:
    """A waiting sender wakes on the first frame; after close it gets EndOfChannel."""
    box = Outbox(4)
    got: list[list[bytes]] = []

    async def sender() -> None:
        got.append(await box.take_all())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        box.put(b"x")
    assert got == [[b"x"]]
    assert box.lossless_queued == 0
    box.close()
    with pytest.raises(trio.EndOfChannel):
        await box.take_all()


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 1000)), max_size=60)
)
def test_each_key_leaves_once_with_its_latest_value_and_lossless_frames_in_order(
    ops: list[tuple[str | None, int]],
) -> None:
    """Whatever the interleaving: lossless frames all in order, each key once, newest value."""
    box = Outbox(1000)
    latest: dict[str, bytes] = {}
    lossless: list[bytes] = []
    for key, value in ops:
        frame = f"{key}:{value}:{len(lossless)}".encode()
        if key is None:
            box.put(frame)
            lossless.append(frame)
        else:
            box.put_latest(key, frame)
            latest[key] = frame
    frames = trio.run(box.take_all) if ops else []
    assert [f for f in frames if f.startswith(b"None")] == lossless
    keyed = [f for f in frames if not f.startswith(b"None")]
    assert sorted(keyed) == sorted(latest.values())

"""Session replay (JSONL and CSV) at the recorded pace, and record → replay round trips."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.feed.replay import (
    MAX_REPLAY_BATCH,
    ReplayFeed,
    ReplayFormatError,
    TickRecorder,
    record_ticks,
)
from actors.market.messages import TickBatch
from protocol import Tick, dumps

T0 = 1_767_600_000_000  # epoch ms of the recorded session's first tick
WALL = 1_800_000_000_000  # epoch ms, the replaying engine's wall clock


def clock() -> int:
    return WALL


class TimedSink:
    """Records each batch with the trio time it arrived."""

    def __init__(self) -> None:
        self.batches: list[TickBatch] = []
        self.times: list[float] = []

    @property
    def ticks(self) -> list[Tick]:
        return [t for b in self.batches for t in b.ticks]

    async def submit(self, batch: TickBatch) -> None:
        await trio.lowlevel.checkpoint()
        self.batches.append(batch)
        self.times.append(trio.current_time())


def tick(offset_ms: int, symbol: str = "NIFTY", ltp: str = "24000.05", **extra: object) -> Tick:
    fields: dict[str, object] = {"symbol": symbol, "ltp": Decimal(ltp), "ts": T0 + offset_ms}
    fields.update(extra)
    return Tick(**fields)  # type: ignore[arg-type]


def write_jsonl(path: Path, items: list[object]) -> Path:
    path.write_bytes(b"".join(dumps(item) + b"\n" for item in items))
    return path


# Offsets (ms) of a session: two ticks at once, then 0.5 s, 1.5 s (+5 ms, same batch), 4 s.
OFFSETS = [0, 0, 500, 1500, 1505, 4000]
BATCH_OFFSETS = [0, 500, 1500, 4000]


def session() -> list[Tick]:
    return [
        tick(off, symbol=f"S{i}", ltp=f"{100 + i}.5", volume=10 * i)
        for i, off in enumerate(OFFSETS)
    ]


@pytest.mark.parametrize("speed", [1.0, 10.0])
async def test_jsonl_replay_keeps_the_recorded_timing_divided_by_speed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, speed: float
) -> None:
    """Each batch goes out at its first tick's recorded offset / speed, exactly."""
    path = write_jsonl(tmp_path / "s.jsonl", [t.to_wire() for t in session()])
    sink = TimedSink()
    with trio.fail_after(60):
        start = trio.current_time()
        await ReplayFeed(path, sink, speed=speed, clock=clock).run()
    assert sink.times == [start + off / (1000 * speed) for off in BATCH_OFFSETS]
    assert [len(b.ticks) for b in sink.batches] == [2, 1, 2, 1]
    assert sink.ticks == session()
    assert {(b.source, b.received_ms) for b in sink.batches} == {("replay", WALL)}


@pytest.mark.parametrize("speed", [0.0, math.inf])
async def test_speed_zero_or_infinite_replays_without_waiting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, speed: float
) -> None:
    """With no pacing every batch goes out at the start time, still batched and in order."""
    path = write_jsonl(tmp_path / "s.jsonl", [t.to_wire() for t in session()])
    sink = TimedSink()
    with trio.fail_after(60):
        start = trio.current_time()
        await ReplayFeed(path, sink, speed=speed, clock=clock).run()
    assert sink.times == [start] * 4
    assert sink.ticks == session()


async def test_csv_replay_takes_columns_in_any_order_and_empty_cells_as_absent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A CSV session with a reordered header and empty cells replays with the recorded timing."""
    path = tmp_path / "s.csv"
    path.write_text(
        "ts,symbol,ltp,bid,ask,bid_qty,ask_qty,volume,oi\n"
        f"{T0},NIFTY,24000.05,24000,24000.10,75,150,1000,\n"
        f"{T0 + 250},BANKNIFTY,52000,,,,,,\n"
        "\n"
        f"{T0 + 2000},NIFTY,24001,,24001.05,,300,1075,500\n",
        encoding="utf-8",
    )
    sink = TimedSink()
    with trio.fail_after(60):
        start = trio.current_time()
        await ReplayFeed(path, sink, speed=1, clock=clock).run()
    assert sink.ticks == [
        tick(
            0, bid=Decimal("24000"), ask=Decimal("24000.10"), bid_qty=75, ask_qty=150, volume=1000
        ),
        tick(250, symbol="BANKNIFTY", ltp="52000"),
        tick(2000, ltp="24001", ask=Decimal("24001.05"), ask_qty=300, volume=1075, oi=500),
    ]
    assert sink.times == [start, start + 0.25, start + 2.0]


async def test_ticks_going_back_in_time_join_the_current_batch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A tick older than its predecessor is not delayed nor reordered: it rides with the batch."""
    offsets = [0, 1000, 990, 2000]
    path = write_jsonl(tmp_path / "s.jsonl", [tick(o, ltp=f"{100 + o}").to_wire() for o in offsets])
    sink = TimedSink()
    with trio.fail_after(60):
        start = trio.current_time()
        await ReplayFeed(path, sink, speed=1, clock=clock).run()
    assert [[t.ts - T0 for t in b.ticks] for b in sink.batches] == [[0], [1000, 990], [2000]]
    assert sink.times == [start, start + 1.0, start + 2.0]


async def test_batches_are_capped_in_size(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Ticks sharing one timestamp are split into batches of at most MAX_REPLAY_BATCH."""
    n = MAX_REPLAY_BATCH + 5
    path = write_jsonl(tmp_path / "s.jsonl", [tick(0, volume=i).to_wire() for i in range(n)])
    sink = TimedSink()
    with trio.fail_after(60):
        await ReplayFeed(path, sink, speed=1, clock=clock).run()
    assert [len(b.ticks) for b in sink.batches] == [MAX_REPLAY_BATCH, 5]
    assert [t.volume for t in sink.ticks] == list(range(n))


async def test_recorded_session_replays_the_same_ticks_in_the_same_order(tmp_path: Path) -> None:
    """record_ticks then ReplayFeed reproduces every tick, field for field, in order."""
    original = [
        TickBatch((tick(0), tick(0, symbol="BANKNIFTY", ltp="52000.1")), "simulator", 1),
        TickBatch((tick(40, bid=Decimal("23999.95"), ask=Decimal("24000.1"), oi=7),), "ws", 2),
        TickBatch(
            (tick(90_000, ltp="101.25", bid_qty=0, ask_qty=1, volume=10**12, oi=0),), "http", 3
        ),
    ]
    path = tmp_path / "session.jsonl"
    assert record_ticks(path, original) == 4
    sink = TimedSink()
    with trio.fail_after(10):
        await ReplayFeed(path, sink, speed=math.inf, clock=clock).run()
    assert sink.ticks == [t for b in original for t in b.ticks]


async def test_recorder_in_front_of_a_sink_records_what_it_forwards(tmp_path: Path) -> None:
    """TickRecorder forwards each batch and the file it leaves replays into the same ticks."""
    live = TimedSink()
    batches = [TickBatch(tuple(session()[i : i + 2]), "ws", i) for i in range(0, 6, 2)]
    path = tmp_path / "live.jsonl"
    with trio.fail_after(10):
        with TickRecorder(path, forward_to=live) as recorder:
            for batch in batches:
                await recorder.submit(batch)
        assert recorder.ticks_recorded == 6
        assert live.batches == batches
        replayed = TimedSink()
        await ReplayFeed(path, replayed, speed=0, clock=clock).run()
    assert replayed.ticks == live.ticks


async def test_recorder_refuses_batches_when_not_open(tmp_path: Path) -> None:
    """A recorder outside its ``with`` block raises instead of dropping ticks."""
    recorder = TickRecorder(tmp_path / "x.jsonl")
    with pytest.raises(RuntimeError, match="not open"):
        await recorder.submit(TickBatch((tick(0),), "ws", 0))


async def test_bad_jsonl_lines_are_counted_and_skipped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Lines that are not JSON or not a valid tick are counted by reason; the rest replays."""
    path = tmp_path / "s.jsonl"
    lines = [
        dumps(tick(0).to_wire()),
        b"{not json",
        b"",
        dumps({**tick(1).to_wire(), "symbol": "bad symbol"}),
        dumps([1, 2]),
        dumps({**tick(2).to_wire(), "extra": 1}),
        dumps({"symbol": "NIFTY", "ltp": "1", "ts": "soon"}),
        b"   ",
        dumps(tick(500).to_wire()),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    sink = TimedSink()
    feed = ReplayFeed(path, sink, speed=1, clock=clock)
    with trio.fail_after(60):
        start = trio.current_time()
        await feed.run()
    assert sink.ticks == [tick(0), tick(500)]
    assert sink.times == [start, start + 0.5]
    stats = feed.statistics()
    assert dict(stats.bad) == {
        "bad_json": 1,
        "bad_symbol": 1,
        "not_object": 1,
        "unknown_field": 1,
        "not_integer": 1,
    }
    assert (stats.lines, stats.ticks, stats.batches) == (7, 2, 2)


async def test_bad_csv_rows_are_counted_and_skipped(tmp_path: Path) -> None:
    """Rows of the wrong width, not UTF-8, or with an invalid tick are counted, not fatal."""
    path = tmp_path / "s.csv"
    path.write_bytes(
        b"symbol,ltp,ts\n"
        + f"NIFTY,24000,{T0}\n".encode()
        + b"NIFTY,24000\n"
        + b"NIFTY,24000,soon\n"
        + b"NIFTY,\xff\xfe,1\n"
        + f"NIFTY,-5,{T0 + 1}\n".encode()
        + f"NIFTY,24001,{T0 + 2}\n".encode()
    )
    sink = TimedSink()
    feed = ReplayFeed(path, sink, speed=0, clock=clock)
    with trio.fail_after(10):
        await feed.run()
    assert sink.ticks == [tick(0, ltp="24000"), tick(2, ltp="24001")]
    assert dict(feed.statistics().bad) == {
        "bad_row": 1,
        "not_integer": 1,
        "bad_encoding": 1,
        "not_positive": 1,
    }


async def test_bad_csv_header_fails_before_start(tmp_path: Path) -> None:
    """A CSV whose header lacks required columns or names unknown ones cannot start."""
    for header in ("symbol,ts\n", "symbol,ltp,ts,price\n", "symbol,ltp,ts,ts\n"):
        path = tmp_path / "s.csv"
        path.write_text(header + f"NIFTY,1,{T0}\n", encoding="utf-8")
        sink = TimedSink()
        with (
            trio.fail_after(10),
            pytest.RaisesGroup(pytest.RaisesExc(ReplayFormatError, match="header")),
        ):
            async with trio.open_nursery() as nursery:
                await nursery.start(ReplayFeed(path, sink, speed=0, clock=clock).run)
        assert sink.batches == []


async def test_replay_reports_started_before_its_first_batch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``nursery.start`` returns once the file is open; batches follow, and the task ends."""
    path = write_jsonl(tmp_path / "s.jsonl", [t.to_wire() for t in session()])
    sink = TimedSink()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(ReplayFeed(path, sink, speed=1, clock=clock).run)
            assert sink.batches == []
        assert len(sink.batches) == 4


async def test_empty_session_replays_nothing_and_returns(tmp_path: Path) -> None:
    """An empty JSONL or CSV file is an empty session."""
    for name in ("e.jsonl", "e.csv"):
        (tmp_path / name).write_bytes(b"")
        sink = TimedSink()
        with trio.fail_after(10):
            await ReplayFeed(tmp_path / name, sink, speed=1, clock=clock).run()
        assert sink.batches == []


async def test_missing_file_fails_start(tmp_path: Path) -> None:
    """A session file that does not exist fails ``nursery.start`` with the OS error."""
    with trio.fail_after(10), pytest.RaisesGroup(FileNotFoundError):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                ReplayFeed(tmp_path / "no.jsonl", TimedSink(), speed=1, clock=clock).run
            )


def test_unknown_format_and_bad_speed_are_refused(tmp_path: Path) -> None:
    """The file suffix must name a format; speed must be 0, positive or infinite."""
    with pytest.raises(ReplayFormatError, match="format"):
        ReplayFeed(tmp_path / "s.txt", TimedSink(), speed=1, clock=clock)
    for speed in (-1.0, math.nan):
        with pytest.raises(ValueError, match="speed"):
            ReplayFeed(tmp_path / "s.jsonl", TimedSink(), speed=speed, clock=clock)

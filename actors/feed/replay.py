"""Replay of a recorded market session, and the recorder that writes one.

Session files:

* JSONL (``.jsonl`` or ``.ndjson``): one wire tick per line, the object of
  ``Tick.to_wire()`` as the ingest endpoints take it, e.g.
  ``{"symbol":"NIFTY","ltp":"24000.05","ts":1767600000000,"volume":1200}``. Blank lines
  are ignored. :class:`TickRecorder` and :func:`record_ticks` write this format.
* CSV (``.csv``): a header row naming columns among ``symbol,ltp,ts,bid,ask,bid_qty,
  ask_qty,volume,oi`` (``symbol``, ``ltp`` and ``ts`` required, any order), then one
  tick per row; an empty cell is an absent field.

Validation: each tick goes through ``protocol.parse_ticks`` with ``now_ms`` = its own
recorded ``ts``. A replay is not live: the ingest time window (``too_old`` /
``in_future`` against the receiver's clock) is taken relative to the recording, where
a tick is always on time, so any integer ``ts`` passes; every other check applies.
Ticks keep their recorded ``ts``; each batch's ``received_ms`` comes from ``clock``.

Timing: consecutive ticks form one batch while their ``ts`` is at most ``window_ms``
after the batch's first tick (so equal timestamps always share a batch), up to
``MAX_REPLAY_BATCH`` ticks; a tick whose ``ts`` goes back joins the current batch.
A batch is submitted at ``start + (ts - ts0) / speed`` seconds on the trio clock, ``ts``
being its first tick's and ``ts0`` the session's first, so the original inter-tick
timing is kept, divided by ``speed``. ``speed`` 0 or infinite replays as fast as the
sink takes the batches; a sink slower than the recording delays a batch, and the
ones after it catch up.

Bad lines (not JSON, a CSV row of the wrong width, not UTF-8, an invalid tick) are
skipped, counted by reason in ``statistics().bad`` and logged (the first
``MAX_LOGGED_BAD_LINES`` with their line number); they never stop the replay. A CSV
header that is not usable stops it before it starts.

File I/O is synchronous, through Python's buffered file objects, between
checkpoints: a session file is local and read or written sequentially, so a worker
thread per read would cost more than the read. It also keeps replays deterministic
on trio's ``MockClock``, which jumps ahead while a worker thread is busy.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO, Final

import trio

from actors.market.messages import TickBatch, TickSink
from protocol import ProtocolError, Tick, dumps, loads, parse_ticks

LOG = logging.getLogger(__name__)

SOURCE: Final = "replay"
BATCH_WINDOW: Final = 10  # ms of recorded time that ticks of one batch may span
MAX_REPLAY_BATCH: Final = 1000  # ticks per submitted batch, at most
MAX_LOGGED_BAD_LINES: Final = 20  # bad lines logged one by one; the rest only counted
CSV_COLUMNS: Final = ("symbol", "ltp", "ts", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi")
CSV_REQUIRED: Final = frozenset({"symbol", "ltp", "ts"})
_INTEGER: Final = re.compile(r"-?[0-9]{1,19}")
_MS_PER_SECOND: Final = 1000

# A line of a session file: its number, the wire tick (or None) and why it is bad (or None).
_Line = tuple[int, object, str | None]


class ReplayFormatError(ValueError):
    """The session file cannot be replayed at all (unknown suffix, bad CSV header)."""


@dataclass(frozen=True, slots=True)
class ReplayStatistics:
    """Counters of a `ReplayFeed`.

    Attributes:
        lines: non-blank lines read (CSV: rows after the header).
        ticks: valid ticks submitted.
        batches: batches submitted.
        bad: skipped lines by reason (``bad_json``, ``bad_row``, ``bad_encoding``, or the
            tick's validation reason such as ``bad_symbol``).
    """

    lines: int
    ticks: int
    batches: int
    bad: Mapping[str, int]


class ReplayFeed:
    """Submit the ticks of a recorded session to a sink, at the recorded pace."""

    def __init__(
        self,
        path: Path | str,
        sink: TickSink,
        *,
        speed: float,
        clock: Callable[[], int],
        window_ms: int = BATCH_WINDOW,
    ) -> None:
        """Configure the replay.

        Args:
            path: the session file, ``.jsonl``/``.ndjson`` or ``.csv``.
            sink: receives `TickBatch(source="replay")`.
            speed: recorded time divided by replay time; 0 or ``math.inf`` = no pacing.
            clock: wall clock, epoch ms: each batch's `received_ms`.
            window_ms: recorded ms that the ticks of one batch may span.

        Raises:
            ReplayFormatError: the suffix names no known format.
            ValueError: `speed` is negative or NaN, or `window_ms` negative.
        """
        self._path = Path(path)
        self._csv = _format_of(self._path) == "csv"
        if math.isnan(speed) or speed < 0:
            raise ValueError(f"speed must be 0, positive or inf, not {speed}")
        if window_ms < 0:
            raise ValueError(f"window_ms must not be negative, not {window_ms}")
        self._speed = speed
        self._paced = 0 < speed < math.inf
        self._sink = sink
        self._clock = clock
        self._window_ms = window_ms
        self._lines = self._ticks = self._batches = 0
        self._bad: collections.Counter[str] = collections.Counter()

    def statistics(self) -> ReplayStatistics:
        """Return the counters so far."""
        return ReplayStatistics(
            self._lines, self._ticks, self._batches, MappingProxyType(dict(self._bad))
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay the whole file, then return.

        Reports started once the file is open (and, for CSV, its header is read); the
        first batch goes out at once, the rest at their recorded offsets.

        Cancellation: stops between batches; a batch is submitted whole or not at all.

        Error handling: bad lines are skipped and counted; errors of the sink propagate.

        Raises:
            OSError: the file cannot be opened or read.
            ReplayFormatError: a CSV file without a usable header.
        """
        with _open_lines(self._path, csv_format=self._csv) as lines:
            task_status.started()
            LOG.info("replaying %s at speed %s", self._path, self._speed)
            start = trio.current_time()
            ts0: int | None = None
            batch: list[Tick] = []
            for number, raw, reason in lines:
                self._lines += 1
                tick = self._check(number, raw, reason)
                if tick is None:
                    await trio.lowlevel.checkpoint()
                    continue
                if batch and (
                    tick.ts - batch[0].ts > self._window_ms or len(batch) >= MAX_REPLAY_BATCH
                ):
                    await self._emit(batch, start, ts0)
                    batch = []
                if ts0 is None:
                    ts0 = tick.ts
                batch.append(tick)
            if batch:
                await self._emit(batch, start, ts0)
        LOG.info(
            "replay of %s done: %d ticks in %d batches, %d bad lines",
            self._path,
            self._ticks,
            self._batches,
            sum(self._bad.values()),
        )

    async def _emit(self, ticks: list[Tick], start: float, ts0: int | None) -> None:
        if self._paced and ts0 is not None:
            offset = (ticks[0].ts - ts0) / (_MS_PER_SECOND * self._speed)
            await trio.sleep_until(start + offset)
        else:
            await trio.lowlevel.checkpoint()
        await self._sink.submit(TickBatch(tuple(ticks), SOURCE, self._clock()))
        self._batches += 1
        self._ticks += len(ticks)

    def _check(self, number: int, raw: object, reason: str | None) -> Tick | None:
        if reason is None:
            ts = raw.get("ts") if isinstance(raw, dict) else None
            # The recording's own time: see the module docstring.
            now_ms = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
            ticks, errors = parse_ticks([raw], now_ms=now_ms)
            if ticks:
                return ticks[0]
            reason = errors[0].reason
        self._bad[reason] += 1
        bad = sum(self._bad.values())
        if bad <= MAX_LOGGED_BAD_LINES:
            LOG.warning("%s line %d skipped: %s", self._path, number, reason)
            if bad == MAX_LOGGED_BAD_LINES:
                LOG.warning("%s: further bad lines are counted, not logged", self._path)
        return None


class TickRecorder:
    """A `TickSink` that writes every batch's ticks to a JSONL session file.

    Use it as a context manager (the file is opened on entry, flushed and closed on
    exit); with ``forward_to`` it passes each batch on, so it can sit in front of the
    market actor and record a live session.
    """

    def __init__(self, path: Path | str, *, forward_to: TickSink | None = None) -> None:
        """Configure the recorder; ``path`` is created or truncated on entry."""
        self._path = Path(path)
        self._forward_to = forward_to
        self._file: BinaryIO | None = None
        self.ticks_recorded = 0

    def __enter__(self) -> TickRecorder:
        self._file = self._path.open("wb")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    async def submit(self, batch: TickBatch) -> None:
        """Forward ``batch`` (if configured), then append its ticks to the file.

        Cancellation: forwarding first, with no checkpoint after it, records exactly
        the batches the downstream sink took.

        Raises:
            RuntimeError: the recorder is not open.
        """
        file = self._open_file()
        if self._forward_to is not None:
            await self._forward_to.submit(batch)
        else:
            await trio.lowlevel.checkpoint()
        self._write(file, batch.ticks)

    def write(self, ticks: Iterable[Tick]) -> None:
        """Append ``ticks`` to the file, synchronously.

        Raises:
            RuntimeError: the recorder is not open.
        """
        self._write(self._open_file(), ticks)

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise RuntimeError("TickRecorder is not open; use it as a context manager")
        return self._file

    def _write(self, file: BinaryIO, ticks: Iterable[Tick]) -> None:
        lines = [dumps(tick.to_wire()) + b"\n" for tick in ticks]
        file.writelines(lines)
        self.ticks_recorded += len(lines)


def record_ticks(path: Path | str, batches: Iterable[TickBatch]) -> int:
    """Write the ticks of ``batches`` to a JSONL session file, in order.

    Returns:
        How many ticks were written.
    """
    with TickRecorder(path) as recorder:
        for batch in batches:
            recorder.write(batch.ticks)
        return recorder.ticks_recorded


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ReplayFormatError(f"unknown session format {suffix!r}: use .jsonl, .ndjson or .csv")


@contextmanager
def _open_lines(path: Path, *, csv_format: bool) -> Iterator[Iterator[_Line]]:
    # Synchronous on purpose: see the module docstring.
    with path.open("rb") as file:
        numbered = ((n, line) for n, line in enumerate(file, 1) if line.strip())
        yield _csv_lines(path, numbered) if csv_format else _jsonl_lines(numbered)


def _jsonl_lines(lines: Iterator[tuple[int, bytes]]) -> Iterator[_Line]:
    for number, line in lines:
        try:
            yield number, loads(line), None
        except ProtocolError:
            yield number, None, "bad_json"


def _csv_lines(path: Path, lines: Iterator[tuple[int, bytes]]) -> Iterator[_Line]:
    # The header is read here, before the caller reports started; the generator body
    # only runs on the first next(), so read it eagerly and hand back the rest.
    header = _csv_header(path, next(lines, None))
    return _csv_rows(header, lines)


def _csv_header(path: Path, first: tuple[int, bytes] | None) -> tuple[str, ...]:
    if first is None:
        return CSV_COLUMNS  # an empty file: an empty session
    try:
        cells = _csv_cells(first[1].decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ReplayFormatError(f"{path}: the CSV header is not UTF-8") from None
    header = tuple(cell.strip() for cell in cells)
    unknown = set(header) - set(CSV_COLUMNS)
    missing = CSV_REQUIRED - set(header)
    if unknown or missing or len(set(header)) != len(header):
        raise ReplayFormatError(
            f"{path}: bad CSV header {','.join(header)!r} (unknown: {sorted(unknown)}, "
            f"missing: {sorted(missing)}, columns: {','.join(CSV_COLUMNS)})"
        )
    return header


def _csv_rows(header: tuple[str, ...], lines: Iterator[tuple[int, bytes]]) -> Iterator[_Line]:
    for number, line in lines:
        try:
            cells = _csv_cells(line.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, None, "bad_encoding"
            continue
        if len(cells) != len(header):
            yield number, None, "bad_row"
            continue
        raw: dict[str, object] = {}
        for name, cell in zip(header, cells, strict=True):
            if cell == "":
                continue
            # ts is an integer on the wire; anything else stays text for the validator
            # to refuse with its own reason.
            raw[name] = int(cell) if name == "ts" and _INTEGER.fullmatch(cell) else cell
        yield number, raw, None


def _csv_cells(text: str) -> list[str]:
    return next(csv.reader([text.rstrip("\r\n")]), [])

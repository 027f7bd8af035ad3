"""Candle aggregation: one symbol's ticks into OHLCV bars of 1m 5m 15m 1h 1d (pure, no I/O).

Bars are stamped with their **open** time (epoch ms UTC) and computed with integer
arithmetic on epoch ms; IST is a fixed UTC+05:30 (India has no DST). Timeframes nest
(every 1m bar lies in one 5m bar, and so on up to 1d).

Alignment:
* Every intraday timeframe is a grid anchored at 09:15 IST of each IST date: 1m bars
  at 09:15, 09:16 ...; 5m at 09:15, 09:20 ...; 15m at 09:15, 09:30 ...; 1h at 09:15,
  10:15 ... 15:15.
* 15:30 IST (the close) is a hard boundary: a bar never straddles it. Only the 1h grid
  has a cell across it, so the 15:15 hour is short (15:15 to 15:30), and ticks from
  15:30 to 16:15 form a piece stamped 15:30; later hours are back on the grid (16:15 ...).
* Ticks outside the regular session (the 09:00-09:15 pre-open, after the close, an
  evening Muhurat session) fall on the same grid of their IST date: a 09:07 tick makes
  a 5m bar at 09:05 and a 1h bar at 08:15. No calendar is consulted, so whatever the
  exchange sends is kept; the grid is clipped to the IST date (a 1h bar starting at
  23:15 ends at midnight, and the next date's first hour is stamped 00:00).
* A 1d bar covers the whole IST date (00:00 to 24:00, so pre-open and evening ticks
  count) and is stamped 09:15 IST of the date. It closes at IST midnight.

Volume: a tick's ``cum_volume`` is the cumulative traded volume of its IST date. A bar's
volume is the increase of that cumulative volume over the bar, measured from the last
cumulative volume seen before the bar in the same date (0 for the day's first bar).
Ticks without volume leave volume alone. If the cumulative volume *falls* (a bad print
or a feed that restarted its counter), the lower value becomes the new baseline: the
fall adds nothing, later increases count from it, and volume is never negative. The
cost is that a single low bad print double-counts the rise back to the true level;
the alternative (ignoring falls) loses all volume after a genuine counter reset until
it passes the old high, which is worse. Falls are counted (``volume_resets``).

Late and out-of-order ticks, per timeframe:
* A tick older than the forming bar's open (or, once :meth:`CandleBook.close_due`
  closed the bar, older than its end) belongs to a closed bar: it is dropped for that
  timeframe and counted (``late``). Closed bars are never rewritten.
* A tick inside the forming bar but older than its newest tick updates high and low,
  and volume if its cumulative volume is above the baseline volume is counted from,
  but not the close. It is never taken for a volume fall, as older ticks naturally
  carry lower volume.
* The close is the price of the newest tick; on equal timestamps the later arrival wins.
* A tick for a later bar closes the forming bar and opens a new one. Bars without
  ticks are not produced (gaps stay gaps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, cast

__all__ = [
    "HISTORY",
    "TIMEFRAMES",
    "TIMEFRAME_MS",
    "Candle",
    "CandleBook",
    "CandleBookStatistics",
    "CandleEvent",
    "Timeframe",
]

Timeframe: TypeAlias = Literal["1m", "5m", "15m", "1h", "1d"]
TIMEFRAMES: Final[tuple[Timeframe, ...]] = ("1m", "5m", "15m", "1h", "1d")

MS_PER_MINUTE: Final = 60_000
MS_PER_HOUR: Final = 60 * MS_PER_MINUTE
MS_PER_DAY: Final = 24 * MS_PER_HOUR
IST_OFFSET_MS: Final = 5 * MS_PER_HOUR + 30 * MS_PER_MINUTE  # UTC+05:30, no DST
SESSION_OPEN_MS: Final = 9 * MS_PER_HOUR + 15 * MS_PER_MINUTE  # 09:15 IST, after IST midnight
SESSION_CLOSE_MS: Final = 15 * MS_PER_HOUR + 30 * MS_PER_MINUTE  # 15:30 IST, after IST midnight
TIMEFRAME_MS: Final[Mapping[Timeframe, int]] = MappingProxyType(
    {
        "1m": MS_PER_MINUTE,
        "5m": 5 * MS_PER_MINUTE,
        "15m": 15 * MS_PER_MINUTE,
        "1h": MS_PER_HOUR,
        "1d": MS_PER_DAY,
    }
)
HISTORY: Final = 500  # closed bars kept per timeframe (for live indicators)

# Bounds of a series with no forming bar yet: every real tick is at or after them.
_NEVER: Final = -(2**62)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar, forming (``closed=False``) or final; also the candle event itself."""

    symbol: str
    tf: Timeframe
    ts: int  # bar open, epoch ms UTC (09:15 IST of the date for 1d)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    closed: bool

    def to_wire(self) -> dict[str, object]:
        """Return the PROTOCOL.md candle event data (money stays Decimal for the encoder)."""
        return {
            "symbol": self.symbol,
            "tf": self.tf,
            "ts": self.ts,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "closed": self.closed,
        }


# A candle is its own event: what `on_tick` and `close_due` return is what is published.
CandleEvent: TypeAlias = Candle

_SlotSetter: TypeAlias = Callable[[Candle, object], None]


def _slot_setter(name: str) -> _SlotSetter:
    return cast(_SlotSetter, Candle.__dict__[name].__set__)


# NOTE: a frozen dataclass's __init__ sets each field through object.__setattr__, and
# on_tick builds a candle per timeframe per tick: that was over 80% of its cost.
# Writing the slots through their descriptors builds the identical (equal, hashable,
# still frozen) object in about half the time. `_candle` names every field, so a new
# field left out here fails loudly on first access.
_new_object: Final = object.__new__
_SET_SYMBOL: Final = _slot_setter("symbol")
_SET_TF: Final = _slot_setter("tf")
_SET_TS: Final = _slot_setter("ts")
_SET_OPEN: Final = _slot_setter("open")
_SET_HIGH: Final = _slot_setter("high")
_SET_LOW: Final = _slot_setter("low")
_SET_CLOSE: Final = _slot_setter("close")
_SET_VOLUME: Final = _slot_setter("volume")
_SET_CLOSED: Final = _slot_setter("closed")


def _candle(
    symbol: str,
    tf: Timeframe,
    ts: int,
    open_: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: int,
    closed: bool,
) -> Candle:
    candle = _new_object(Candle)
    _SET_SYMBOL(candle, symbol)
    _SET_TF(candle, tf)
    _SET_TS(candle, ts)
    _SET_OPEN(candle, open_)
    _SET_HIGH(candle, high)
    _SET_LOW(candle, low)
    _SET_CLOSE(candle, close)
    _SET_VOLUME(candle, volume)
    _SET_CLOSED(candle, closed)
    return candle


@dataclass(frozen=True, slots=True)
class CandleBookStatistics:
    """Counters of one book."""

    ticks: int
    late: int  # ticks dropped by at least one timeframe
    late_by_tf: Mapping[Timeframe, int]  # drops per timeframe
    volume_resets: int  # ticks whose cumulative volume fell (new baseline)


def _bounds(length: int, ts: int) -> tuple[int, int, int]:
    # [start, end) of the bar holding `ts`, and its stamp; see the module docstring.
    day_start = (ts + IST_OFFSET_MS) // MS_PER_DAY * MS_PER_DAY - IST_OFFSET_MS
    day_end = day_start + MS_PER_DAY
    if length == MS_PER_DAY:
        return day_start, day_end, day_start + SESSION_OPEN_MS
    anchor = day_start + SESSION_OPEN_MS
    start = anchor + (ts - anchor) // length * length
    end = start + length
    close = day_start + SESSION_CLOSE_MS
    if start < close < end:
        if ts < close:
            end = close
        else:
            start = close
    start = max(start, day_start)
    return start, min(end, day_end), start


class _Series:
    # The forming bar and closed history of one timeframe. Mutable and private: the
    # outside world only sees frozen `Candle` snapshots.
    __slots__ = (
        "close",
        "close_ts",
        "day",
        "end",
        "forming",
        "high",
        "history",
        "last_closed",
        "late",
        "length",
        "low",
        "open",
        "ref",
        "stamp",
        "start",
        "tf",
        "volume",
    )

    def __init__(self, tf: Timeframe, history_size: int) -> None:
        self.tf: Timeframe = tf
        self.length = TIMEFRAME_MS[tf]
        # NOTE: with no forming bar, start == end, so the in-bar test never matches;
        # ticks before `start` are late, ticks at or after `end` open a bar.
        self.start = self.end = self.stamp = _NEVER
        self.forming = False
        self.open = self.high = self.low = self.close = Decimal(0)
        self.close_ts = _NEVER
        self.volume = 0
        self.day = _NEVER  # IST date (days since epoch) of the last bar opened
        self.ref = 0  # cumulative volume of the date that volume is counted from
        self.late = 0
        self.history: deque[Candle] = deque(maxlen=history_size)
        self.last_closed: Candle | None = None

    def begin(self, ts: int, price: Decimal) -> None:
        day = (ts + IST_OFFSET_MS) // MS_PER_DAY
        if day != self.day:
            self.day = day
            self.ref = 0
        self.start, self.end, self.stamp = _bounds(self.length, ts)
        self.forming = True
        self.open = self.high = self.low = self.close = price
        self.close_ts = ts
        self.volume = 0

    def finish(self, symbol: str) -> Candle:
        candle = self.candle(symbol, closed=True)
        self.history.append(candle)
        self.last_closed = candle
        self.forming = False
        self.start = self.end
        return candle

    def candle(self, symbol: str, *, closed: bool) -> Candle:
        return _candle(
            symbol,
            self.tf,
            self.stamp,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            closed,
        )


class CandleBook:
    """The candles of one symbol in every timeframe of :data:`TIMEFRAMES`.

    Not thread-safe; one owner (the market actor) feeds it, readers take snapshots.
    """

    __slots__ = ("_by_tf", "_late", "_resets", "_series", "_ticks", "symbol")

    def __init__(self, symbol: str, *, history_size: int = HISTORY) -> None:
        """Create an empty book.

        Args:
            symbol: stamped on every candle.
            history_size: closed bars kept per timeframe (oldest dropped first).
        """
        self.symbol = symbol
        self._series = tuple(_Series(tf, history_size) for tf in TIMEFRAMES)
        self._by_tf = {s.tf: s for s in self._series}
        self._ticks = 0
        self._late = 0
        self._resets = 0

    def on_tick(
        self,
        tick_ts_ms: int,
        price: Decimal,
        cum_volume: int | None,
        *,
        snapshots: bool = True,
    ) -> list[Candle]:
        """Apply one tick to every timeframe and return the candles it produced.

        Args:
            tick_ts_ms: the tick's exchange time, epoch ms UTC.
            price: the traded price (ltp), kept exactly.
            cum_volume: the cumulative traded volume of the IST date, if the tick has it.
            snapshots: also return the forming candles. A caller that applies a batch of
                ticks and wants the forming state once at its end passes False and then
                calls :meth:`forming_all` (most of the cost of a tick is the snapshots).

        Returns:
            Per timeframe, in :data:`TIMEFRAMES` order: the updated forming candle, or the
            closed previous candle followed by the new forming one; nothing for a
            timeframe that dropped the tick as late. Without ``snapshots``, only the
            closed candles.
        """
        self._ticks += 1
        symbol = self.symbol
        events: list[Candle] = []
        dropped = reset = False
        for s in self._series:
            # Hot path: the tick falls in the forming bar; only compare and assign.
            if s.start <= tick_ts_ms < s.end:
                if price > s.high:
                    s.high = price
                elif price < s.low:
                    s.low = price
                in_order = tick_ts_ms >= s.close_ts
                if in_order:
                    s.close = price
                    s.close_ts = tick_ts_ms
            elif tick_ts_ms >= s.end:
                if s.forming:
                    events.append(s.finish(symbol))
                s.begin(tick_ts_ms, price)
                in_order = True
            else:
                s.late += 1
                dropped = True
                continue
            if cum_volume is not None:
                if cum_volume >= s.ref:
                    s.volume += cum_volume - s.ref
                    s.ref = cum_volume
                elif in_order:
                    s.ref = cum_volume
                    reset = True
            if not snapshots:
                continue
            events.append(
                _candle(
                    symbol,
                    s.tf,
                    s.stamp,
                    s.open,
                    s.high,
                    s.low,
                    s.close,
                    s.volume,
                    False,
                )
            )
        if dropped:
            self._late += 1
        if reset:
            self._resets += 1
        return events

    def close_due(self, now_ms: int) -> list[Candle]:
        """Close every forming bar that ends at or before ``now_ms``; return them.

        A timer calls this so that bars close when ticks stop (at 15:30, in a quiet
        minute). Ticks older than a bar closed here are dropped as late afterwards.
        """
        return [s.finish(self.symbol) for s in self._series if s.forming and s.end <= now_ms]

    def forming(self, tf: Timeframe) -> Candle | None:
        """Return a snapshot of the forming bar of ``tf``, or None.

        Raises:
            ValueError: ``tf`` is not one of :data:`TIMEFRAMES`.
        """
        s = self._get(tf)
        return s.candle(self.symbol, closed=False) if s.forming else None

    def forming_all(self) -> list[Candle]:
        """Return snapshots of the forming bars of every timeframe that has one, in order."""
        symbol = self.symbol
        return [s.candle(symbol, closed=False) for s in self._series if s.forming]

    def last_closed(self, tf: Timeframe) -> Candle | None:
        """Return the newest closed bar of ``tf``, or None.

        Raises:
            ValueError: ``tf`` is not one of :data:`TIMEFRAMES`.
        """
        return self._get(tf).last_closed

    def history(self, tf: Timeframe) -> list[Candle]:
        """Return the kept closed bars of ``tf``, oldest first (a copy).

        Raises:
            ValueError: ``tf`` is not one of :data:`TIMEFRAMES`.
        """
        return list(self._get(tf).history)

    def statistics(self) -> CandleBookStatistics:
        """Return the book's counters."""
        return CandleBookStatistics(
            ticks=self._ticks,
            late=self._late,
            late_by_tf=MappingProxyType({s.tf: s.late for s in self._series}),
            volume_resets=self._resets,
        )

    def _get(self, tf: Timeframe) -> _Series:
        series = self._by_tf.get(tf)
        if series is None:
            raise ValueError(f"unknown timeframe {tf!r}; expected one of {TIMEFRAMES}")
        return series

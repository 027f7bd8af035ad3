"""Live market analytics: the instrument universe, futures analysis and indicators.

Universe (:class:`Universe`, :class:`UniverseCache`): the master grouped once into option
chains and futures by underlying, reused by chains and futures; and the spot rule shared
with the chains (:meth:`Universe.spot_quote`, see :mod:`.chain`).

Futures (:func:`live_futures`): the underlying's futures with a quote and not yet expired
(expiry instant, 15:30 IST, after now), analysed with ``analyze_futures`` against the spot
(the ltp of the underlying's own quote) as of today's IST date. Each contract's price is
its ltp and its OI the quote's. The previous observation of the OI build-up (FINANCE.md
§5) is the contract's last quote before its OI last changed (``MarketActor.oi_before``):
exchanges publish OI in snapshots, so compared tick to tick ΔOI would be 0 (``neutral``)
almost always. Until a contract's OI has changed once since the market actor started,
its ``buildup`` is null, as the POST gives it without ``prev_price``/``prev_oi``.

Indicators (:class:`LiveIndicators`): the values over a symbol's kept closed bars of one
timeframe (``CandleBook.history``) followed by its forming bar, exactly what
``compute_indicator`` returns over those bars. Each (symbol, tf, indicator, params) keeps an
``IndicatorStream`` that is fed each closed bar once, as it appears, and ``peek``s the
forming bar; the streams live in a least-recently-used cache of
:data:`INDICATOR_CACHE_SIZE` entries.

The window of kept bars slides once the book holds ``HISTORY`` bars: each new closed bar
drops the oldest. Most indicators depend on their first bar (EMA/RSI/ATR/ADX seeds, OBV,
VWAP), so the values over the new window are not the old stream's. A stream is therefore
rebuilt from the window whenever the window's first bar changed: O(window) once per closed
bar and cache entry, never per request; between bar closes a request costs one ``peek``
plus the copy of the values.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from engine.analytics import (
    INDICATOR_OUTPUTS,
    IST,
    Bar,
    FutureQuote,
    FuturesAnalysis,
    IndicatorOutput,
    IndicatorStream,
    IndicatorStreamValue,
    analyze_futures,
    create_indicator_stream,
    expiry_ts_ms,
    resolve_indicator_params,
)
from protocol import Instrument

from .candles import Candle, CandleBook, Timeframe
from .instruments import chain_key
from .messages import Quote

UNIVERSE_TTL: Final = 5.0  # seconds a scan of the master is reused while its size is unchanged
INDICATOR_CACHE_SIZE: Final = 256  # live indicator streams kept; least recently used evicted
MS_PER_S: Final = 1000

ChainKey = tuple[str, dt.date]
_Params = tuple[tuple[str, int | float], ...]
_Key = tuple[str, Timeframe, str, _Params]


class InstrumentSource(Protocol):
    """The part of the instrument master the live analytics read."""

    def all(self) -> list[Instrument]: ...
    def __len__(self) -> int: ...


class QuoteSource(Protocol):
    """Latest quotes by symbol."""

    def quote(self, symbol: str) -> Quote | None: ...


@dataclass(frozen=True, slots=True)
class Universe:
    """One pass over the instrument master: option chains and futures by underlying."""

    chains: Mapping[ChainKey, tuple[Instrument, ...]]
    futures: Mapping[str, tuple[Instrument, ...]]  # by underlying, nearest expiry first

    @classmethod
    def scan(cls, instruments: Iterable[Instrument]) -> Universe:
        """Group ``instruments`` (one O(n) pass)."""
        chains: dict[ChainKey, list[Instrument]] = {}
        futures: dict[str, list[Instrument]] = {}
        for inst in instruments:
            key = chain_key(inst)
            if key is not None:
                chains.setdefault(key, []).append(inst)
            elif inst.kind == "future" and inst.underlying is not None and inst.expiry is not None:
                futures.setdefault(inst.underlying, []).append(inst)
        return cls(
            chains={k: tuple(v) for k, v in chains.items()},
            futures={
                u: tuple(sorted(v, key=lambda i: (i.expiry, i.symbol))) for u, v in futures.items()
            },
        )

    def spot_quote(self, market: QuoteSource, underlying: str, now_ms: int) -> Quote | None:
        """Return the quote that gives ``underlying``'s spot (see :mod:`.chain`)."""
        quote = market.quote(underlying)
        if quote is not None:
            return quote
        for future in self.futures.get(underlying, ()):
            # NOTE: an expired future's last quote is stale; `expiry` is set by `scan`.
            if future.expiry is not None and expiry_ts_ms(future.expiry) > now_ms:
                quote = market.quote(future.symbol)
                if quote is not None:
                    return quote
        return None


class UniverseCache:
    """A :class:`Universe` of the master, rescanned when stale.

    A scan sorts and groups the whole master: about 30 ms for the 70,000 options of all
    NSE F&O, too slow for every request or cycle. It is reused for ``ttl`` seconds (trio
    clock), and rescanned at once when the master's size changes, i.e. whenever symbols are
    added or the master is reloaded with another count. An upsert that changes an existing
    symbol's fields is seen within ``ttl``.
    """

    def __init__(self, master: InstrumentSource, *, ttl: float = UNIVERSE_TTL) -> None:
        """Create an empty cache over ``master``; ``ttl`` in seconds."""
        self._master = master
        self._ttl = ttl
        self._universe: Universe | None = None
        self._size = -1
        self._expires = -math.inf

    def get(self) -> Universe:
        """Return a scan of the master no older than ``ttl`` (see the class docstring)."""
        now = trio.current_time()
        size = len(self._master)
        if self._universe is None or size != self._size or now >= self._expires:
            self._universe = Universe.scan(self._master.all())
            self._size = size
            self._expires = now + self._ttl
        return self._universe


class NoLiveData(LookupError):
    """There is nothing to compute from (no quotes, no candles); the HTTP layer answers 404."""


class FuturesMarket(Protocol):
    """What futures analysis reads of the market actor."""

    @property
    def master(self) -> InstrumentSource: ...

    def quote(self, symbol: str) -> Quote | None: ...

    def oi_before(self, symbol: str) -> Quote | None: ...


class CandleMarket(Protocol):
    """What live indicators read of the market actor."""

    def candles(self, symbol: str) -> CandleBook | None: ...


def ist_date(now_ms: int) -> dt.date:
    """Return the IST calendar date of an epoch-ms instant."""
    return dt.datetime.fromtimestamp(now_ms / MS_PER_S, tz=IST).date()


def live_futures(
    market: FuturesMarket, underlying: str, now_ms: int, universe: Universe | None = None
) -> FuturesAnalysis:
    """Analyse ``underlying``'s live futures against its spot (see the module docstring).

    Args:
        market: the market actor (or anything with its read side).
        underlying: e.g. ``NIFTY``.
        now_ms: the valuation instant, epoch ms UTC; its IST date is ``as_of``.
        universe: a scan of the master to reuse; scanned afresh when None.

    Returns:
        The analysis, contracts nearest expiry first.

    Raises:
        NoLiveData: no unexpired future of ``underlying`` has a quote, or the
            underlying itself has none (no spot to take the basis from).
    """
    if universe is None:
        universe = Universe.scan(market.master.all())
    futures = universe.futures.get(underlying, ())
    observed: list[FutureQuote] = []
    for inst in futures:
        if inst.expiry is None or expiry_ts_ms(inst.expiry) <= now_ms:
            continue
        quote = market.quote(inst.symbol)
        if quote is not None:
            before = market.oi_before(inst.symbol)
            observed.append(
                FutureQuote(
                    expiry=inst.expiry,
                    price=quote.ltp,
                    oi=quote.oi,
                    prev_price=None if before is None else before.ltp,
                    prev_oi=None if before is None else before.oi,
                )
            )
    if not observed:
        raise NoLiveData(f"no futures quotes for {underlying}")
    spot = market.quote(underlying)
    if spot is None:
        raise NoLiveData(f"no spot quote for {underlying}")
    return analyze_futures(spot.ltp, ist_date(now_ms), observed)


def futures_to_wire(analysis: FuturesAnalysis) -> dict[str, object]:
    """Return the ``POST /v1/futures/analyze`` response object of an analysis."""
    return {
        "contracts": [
            {
                "expiry": c.expiry.isoformat(),
                "days_to_expiry": c.days_to_expiry,
                "basis": c.basis,
                "basis_pct": c.basis_pct,
                "annualized_carry_pct": c.annualized_carry_pct,
                "buildup": c.buildup,
            }
            for c in analysis.contracts
        ],
        "rollover_pct": analysis.rollover_pct,
    }


def candle_bar(candle: Candle) -> Bar:
    """Return a candle as an indicator bar (prices as doubles, FINANCE.md §6)."""
    return Bar(
        candle.ts,
        float(candle.open),
        float(candle.high),
        float(candle.low),
        float(candle.close),
        float(candle.volume),
    )


@dataclass(slots=True)
class _Entry:
    # A stream fed with history[:count]; `first_ts`/`last_ts` are the stamps of the
    # first and last of those bars, `values` what `update` returned for each.
    stream: IndicatorStream
    first_ts: int
    last_ts: int
    count: int
    values: list[IndicatorStreamValue]


@dataclass(frozen=True, slots=True)
class LiveIndicatorStatistics:
    """Counters of a :class:`LiveIndicators` cache."""

    entries: int
    hits: int  # requests served by feeding an existing stream
    rebuilds: int  # streams (re)built from the kept bars
    evictions: int


def _columns(indicator: str, values: list[IndicatorStreamValue]) -> IndicatorOutput:
    # Stream values per bar -> the POST's `values` shape (one list, or one per output).
    outputs = INDICATOR_OUTPUTS.get(indicator)
    if outputs is None:
        return [v if not isinstance(v, dict) else None for v in values]
    return {
        name: [v.get(name) if isinstance(v, dict) else None for v in values] for name in outputs
    }


class LiveIndicators:
    """Indicators over live candles, kept incrementally (see the module docstring).

    Not thread-safe: call it from the event loop that runs the market actor, which
    mutates the candle books between (never during) calls.
    """

    def __init__(self, market: CandleMarket, *, capacity: int = INDICATOR_CACHE_SIZE) -> None:
        """Create an empty cache.

        Args:
            market: where the candle books are read.
            capacity: streams kept at most (least recently used evicted first).

        Raises:
            ValueError: ``capacity`` < 1.
        """
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._market = market
        self._capacity = capacity
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._hits = self._rebuilds = self._evictions = 0

    def statistics(self) -> LiveIndicatorStatistics:
        """Return the cache's counters."""
        return LiveIndicatorStatistics(
            len(self._entries), self._hits, self._rebuilds, self._evictions
        )

    def compute(
        self,
        symbol: str,
        tf: Timeframe,
        indicator: str,
        params: Mapping[str, object] | None = None,
    ) -> IndicatorOutput:
        """Return ``indicator`` over ``symbol``'s kept closed bars of ``tf`` and its forming bar.

        Args:
            symbol: the instrument.
            tf: one of the candle timeframes.
            indicator: a PROTOCOL.md indicator name.
            params: its parameters; missing ones take their defaults.

        Returns:
            The POST ``values``: one value per bar (oldest first, the forming bar last), or
            ``{output: values}`` for macd, bbands and stoch.

        Raises:
            IndicatorError: unknown indicator or bad parameters.
            NoLiveData: ``symbol`` has no candles of ``tf``.
            ValueError: ``tf`` is not a timeframe.
        """
        resolved = resolve_indicator_params(indicator, params)
        book = self._market.candles(symbol)
        if book is None:
            raise NoLiveData(f"no candles for {symbol}")
        history = book.history(tf)
        forming = book.forming(tf)
        if not history and forming is None:
            raise NoLiveData(f"no {tf} candles for {symbol}")
        key: _Key = (symbol, tf, indicator, tuple(sorted(resolved.items())))
        entry = self._sync(key, history, indicator, resolved)
        values = list(entry.values) if entry is not None else []
        if forming is not None:
            stream = (
                entry.stream if entry is not None else create_indicator_stream(indicator, resolved)
            )
            values.append(stream.peek(candle_bar(forming)))
        return _columns(indicator, values)

    def _sync(
        self,
        key: _Key,
        history: list[Candle],
        indicator: str,
        params: Mapping[str, object],
    ) -> _Entry | None:
        # The entry of `key` fed with exactly `history`, or None for an empty history.
        if not history:
            return None
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.first_ts == history[0].ts
            and entry.count <= len(history)
            and history[entry.count - 1].ts == entry.last_ts
        ):
            self._entries.move_to_end(key)
            self._hits += 1
            for candle in history[entry.count :]:
                entry.values.append(entry.stream.update(candle_bar(candle)))
        else:
            stream = create_indicator_stream(indicator, params)
            values = [stream.update(candle_bar(c)) for c in history]
            entry = _Entry(stream, history[0].ts, history[0].ts, 0, values)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._rebuilds += 1
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
                self._evictions += 1
        entry.count = len(history)
        entry.last_ts = history[-1].ts
        return entry
